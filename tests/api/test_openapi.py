"""The OpenAPI document is true: schemathesis (PyPI) runs every documented
operation against a live server with a valid token, and every answer must
conform to the document, with no 5xx.

One check is left out: ``positive_data_acceptance`` expects the server to
accept anything the schema admits, and the document cannot say "printable
characters" (Python's ``str.isprintable``) or "an integer, not 3.0" in JSON
Schema exactly; those requests get a documented 400 instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson

from harness.server import TEST_SECRET, ServerProcess
from tornchat.api.openapi import document, encoded_document
from tornchat.auth import mint_token
from tornchat.contract.protocol import Limits


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is not installed (pip install -e '.[test]')"
    return found


API_KEY = "schemathesis-api-key-" + "x" * 20


def _schemathesis_run(server: ServerProcess, cwd, header: str, selection: list[str]
                      ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_schemathesis(), "run", f"{server.http_url}/api/v1/openapi.json", *selection,
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--header", header, "--max-examples", "40", "--seed", "20261201", "--no-color",
         "--workers", "1"],
        cwd=cwd, capture_output=True, text=True, timeout=300)


def test_schemathesis_finds_no_server_error_and_no_nonconforming_answer(tmp_path):
    """The user endpoints with a user's token, the server API with its key."""
    server = ServerProcess(cwd=str(tmp_path), env={
        "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db", "TORNCHAT_API_KEY": API_KEY}).start()
    try:
        token = mint_token(TEST_SECRET, "alice")
        runs = [
            _schemathesis_run(server, tmp_path, f"Authorization: Bearer {token}",
                              ["--exclude-path-regex", "^/api/v1/server/"]),
            _schemathesis_run(server, tmp_path, f"X-API-Key: {API_KEY}",
                              ["--include-path-regex", "^/api/v1/server/"]),
        ]
    finally:
        server.stop()
    for result in runs:  # warnings (e.g. "mostly rejected generated data") are no failures
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "Failures:" not in result.stdout and " passed" in result.stdout, result.stdout


def test_the_served_document_is_openapi_3_1_and_lists_every_api_route(tmp_path):
    server = ServerProcess(cwd=str(tmp_path), env={
        "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}).start()
    try:
        with urllib.request.urlopen(f"{server.http_url}/api/v1/openapi.json") as response:
            served = orjson.loads(response.read())
            assert response.headers["Content-Type"].startswith("application/json")
    finally:
        server.stop()
    assert served == orjson.loads(encoded_document())
    assert served["openapi"] == "3.1.0"
    assert set(served["paths"]) == {
        "/api/v1/conversations", "/api/v1/conversations/{conversationId}",
        "/api/v1/conversations/{conversationId}/messages",
        "/api/v1/conversations/{conversationId}/read", "/api/v1/openapi.json",
        "/api/v1/presence",
        "/api/v1/server/messages", "/api/v1/server/users/{userId}/disconnect",
        "/api/v1/dev/token"}


def test_the_request_bounds_are_the_servers_settings():
    schemas = document(Limits(max_message_length=10, max_recipients=7))["components"]["schemas"]
    assert schemas["OpenConversation"]["properties"]["recipientIds"]["maxItems"] == 7
    server_message = schemas["ServerMessage"]["properties"]
    assert server_message["recipientIds"]["maxItems"] == 7
    assert server_message["content"]["maxLength"] == 10
    defaults = document()["components"]["schemas"]["ServerMessage"]["properties"]
    assert defaults["content"]["maxLength"] == 4000  # TORNCHAT_MAX_MESSAGE_LENGTH's default
