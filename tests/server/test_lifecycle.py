"""Start-up and graceful shutdown of a real ``tornchat serve`` process."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from harness.server import TEST_SECRET, ServerProcess
from harness.wsclient import ClosedError, authed
from tornchat.server.lifecycle import FULL_COLLECTION_EVERY, settle_collector

SEED_VARIABLES = ("PORT", "DATABASE_URL", "ACCESS_TOKEN_SECRET", "REDIS_URL", "KAFKA_BROKER",
                  "LOG_LEVEL", "NODE_ENV")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in SEED_VARIABLES and not k.startswith("TORNCHAT_")}
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: str | None = None):
    return subprocess.run([sys.executable, "-m", "tornchat.cli", *args], env=env or clean_env(),
                          cwd=cwd, capture_output=True, text=True, timeout=30)


def listen_backlog(port: int) -> int:
    """The accept queue's length of the socket listening on ``port`` (``ss``
    shows it as the Send-Q of a listening socket)."""
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                           text=True, check=True, timeout=10).stdout.split()
    return int(shown[2])


@pytest.mark.slow
def test_serve_starts_with_nothing_configured(tmp_path):
    server = ServerProcess(cwd=str(tmp_path))
    server.env = clean_env(PORT=str(server.port))
    server.start()
    try:
        status, body = server.health()
        assert status == 200
        assert body["dependencies"] == {"database": "ok", "redis": "disabled",
                                        "kafka": "disabled"}
        assert (tmp_path / "tornchat.db").exists()
        assert "DEVELOPMENT secret" in server.logs()
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert listen_backlog(server.port) == min(1024, somaxconn)  # not Tornado's 128
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_one_process_with_a_metrics_directory_that_does_not_exist_yet(tmp_path):
    metrics_dir = tmp_path / "metrics" / "not-yet"
    server = ServerProcess(cwd=str(tmp_path))
    server.env = clean_env(PORT=str(server.port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    server.start()
    try:
        assert server.health()[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as response:
            assert b"tornchat_connections" in response.read()
        assert any(metrics_dir.glob("*.db"))
    finally:
        assert server.stop() == 0


@pytest.mark.slow
async def test_sigterm_notifies_clients_closes_1001_and_loses_nothing_acknowledged(tmp_path):
    server = ServerProcess(cwd=str(tmp_path)).start()
    alice = await authed(server.ws_url, TEST_SECRET, "alice")
    bob = await authed(server.ws_url, TEST_SECRET, "bob")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "m-0"})
    conversation_id = first["data"]["conversationId"]
    acked = {first["data"]["id"]}
    for i in range(1, 60):
        await alice.send({"type": "send_message", "conversationId": conversation_id,
                          "content": f"m-{i}", "clientMessageId": f"c-{i}"})
    server.signal(signal.SIGTERM)

    saw_shutdown = False
    while True:
        try:
            frame = await alice.recv(timeout=6)
        except ClosedError:
            break
        if frame["type"] == "message_sent":
            acked.add(frame["data"]["id"])
        elif frame["type"] == "server_shutdown":
            assert frame["data"] == {"reconnectAfterMs": 5000}
            saw_shutdown = True
    assert saw_shutdown
    assert alice.conn.close_code == 1001
    assert await bob.wait_closed(timeout=6) == 1001
    assert await asyncio.get_running_loop().run_in_executor(None, server.wait, 6) == 0

    with sqlite3.connect(tmp_path / "tornchat.db") as db:
        stored = {row[0] for row in db.execute("SELECT id FROM message")}
    assert acked <= stored
    assert "shutdown complete" in server.logs()


def test_production_refuses_a_missing_or_short_secret(tmp_path):
    result = run_cli("serve", env=clean_env(TORNCHAT_ENV="production"), cwd=str(tmp_path))
    assert result.returncode == 2
    assert "ACCESS_TOKEN_SECRET" in result.stderr
    assert "required" in result.stderr
    result = run_cli("serve", env=clean_env(TORNCHAT_ENV="production",
                                            ACCESS_TOKEN_SECRET="short"), cwd=str(tmp_path))
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


def test_bad_settings_are_named_in_one_readable_line(tmp_path):
    for env, name in (({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
                      ({"PORT": "eighty"}, "PORT"),
                      ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
                      ({"TORNCHAT_HEARTBEAT_INTERVAL": "-1"}, "TORNCHAT_HEARTBEAT_INTERVAL")):
        result = run_cli("serve", env=clean_env(**env), cwd=str(tmp_path))
        assert result.returncode == 2, result
        assert result.stderr.startswith(f"tornchat: configuration error: {name}:"), result.stderr
        assert "Traceback" not in result.stderr


def test_more_than_one_process_without_redis_is_a_clear_error(tmp_path):
    result = run_cli("serve", "--processes", "2", cwd=str(tmp_path))
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


def test_logs_are_json_for_machines_and_one_readable_line_on_a_terminal():
    import io
    import json
    import logging

    from tornchat.server.logsetup import configure_logging

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for stream, log_format in ((io.StringIO(), "auto"), (Terminal(), "json")):
            configure_logging("info", log_format, stream)
            logging.getLogger("tornchat.test").info("hello", extra={"userId": "alice"})
            record = json.loads(stream.getvalue())
            assert (record["logger"], record["message"], record["userId"]) == (
                "tornchat.test", "hello", "alice")
        for log_format in ("auto", "text"):
            stream = Terminal()
            configure_logging("info", log_format, stream)
            logging.getLogger("tornchat.test").warning("slow down", extra={"connectionId": "c1"})
            line = stream.getvalue().rstrip("\n")
            assert "\n" not in line and line.endswith("slow down  connectionId=c1"), line
            assert " WARNING tornchat.test  " in line
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_started_worker_freezes_what_it_has_and_collects_fully_a_tenth_as_often():
    threshold = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (threshold[0], threshold[1], FULL_COLLECTION_EVERY)
        assert FULL_COLLECTION_EVERY == 10 * 10  # CPython's default is 10
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
