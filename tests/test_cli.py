"""The ``tornchat`` command line: help, token, migrate, and one readable line
(never a traceback) when a command cannot start."""

from __future__ import annotations

import socket

import pytest

from harness.ports import free_port
from harness.services import fresh_postgres_database
from tests.server.test_lifecycle import clean_env, run_cli
from tornchat.auth import TokenVerifier
from tornchat.config import DEV_SECRET


def test_help_explains_every_command_and_setting():
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("serve", "migrate", "token", "healthcheck", "ACCESS_TOKEN_SECRET",
                 "DATABASE_URL", "TORNCHAT_ALLOWED_ORIGINS"):
        assert word in result.stdout
    serve_help = run_cli("serve", "--help").stdout
    assert "--processes" in serve_help and "--port" in serve_help


def test_token_is_signed_with_the_configured_secret():
    secret = "x" * 40
    result = run_cli("token", "alice", "--ttl", "60", env=clean_env(ACCESS_TOKEN_SECRET=secret))
    assert result.returncode == 0
    assert TokenVerifier(secret).verify(result.stdout.strip()) == "alice"
    assert result.stderr == ""


def test_token_with_the_development_secret_warns():
    result = run_cli("token", "bob")
    assert TokenVerifier(DEV_SECRET).verify(result.stdout.strip()) == "bob"
    assert "development secret" in result.stderr


def test_token_rejects_a_non_positive_ttl():
    result = run_cli("token", "bob", "--ttl", "0")
    assert result.returncode == 2
    assert "--ttl" in result.stderr


@pytest.mark.postgres
def test_migrate_applies_once_and_serve_refuses_a_stale_postgres_schema(tmp_path):
    with fresh_postgres_database() as url:
        result = run_cli("serve", env=clean_env(DATABASE_URL=url), cwd=str(tmp_path))
        assert result.returncode == 2
        assert "tornchat migrate" in result.stderr
        first = run_cli("migrate", env=clean_env(DATABASE_URL=url))
        assert first.returncode == 0
        assert "applied: 0001_initial" in first.stdout
        second = run_cli("migrate", env=clean_env(DATABASE_URL=url))
        assert second.stdout.strip() == "schema is up to date"


@pytest.mark.parametrize("user_id", ["", "x" * 129, "bad\nid"])
def test_token_refuses_a_user_id_the_server_would_refuse(user_id):
    result = run_cli("token", user_id)
    assert result.returncode == 2
    assert "USER_ID: must be 1 to 128 printable characters" in result.stderr
    assert result.stdout == ""


def test_healthcheck_asks_the_port_of_the_settings_file(tmp_path):
    conf = tmp_path / "tornchat.toml"
    conf.write_text(f"port = {free_port()}\nhost = \"0.0.0.0\"\n")
    result = run_cli("healthcheck", "--config", str(conf), "--timeout", "1")
    assert result.returncode == 1
    port = conf.read_text().split()[2]
    assert f"unhealthy: http://127.0.0.1:{port}/health" in result.stderr


def test_events_actions_take_the_config_file_before_or_after_the_action(tmp_path):
    conf = tmp_path / "tornchat.toml"
    conf.write_text(f'database_url = "sqlite:///{tmp_path}/chat.db"\n')
    assert run_cli("migrate", "--config", str(conf)).returncode == 0
    for args in (("events", "--config", str(conf), "status"),
                 ("events", "status", "--config", str(conf))):
        result = run_cli(*args, cwd=str(tmp_path / ".."))
        assert result.returncode == 0, result.stderr
        assert '"pending": 0' in result.stdout


def test_healthcheck_fails_when_nothing_listens():
    result = run_cli("healthcheck", "--url", "http://127.0.0.1:9/health", "--timeout", "1")
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def _one_line_error(result, exit_code: int = 1) -> str:
    """The command failed with ``exit_code`` and said why in one line."""
    assert result.returncode == exit_code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tornchat:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("serve",), ("migrate",), ("events", "status")])
def test_an_unreachable_database_is_one_line_naming_it_without_the_password(command, tmp_path):
    url = f"postgresql://chat:s3cret@127.0.0.1:{free_port()}/chat"
    line = _one_line_error(run_cli(*command, env=clean_env(DATABASE_URL=url),
                                   cwd=str(tmp_path)))
    assert "cannot use DATABASE_URL postgresql://chat:***@127.0.0.1" in line
    assert "Connection refused" in line
    assert "s3cret" not in line


def test_a_sqlite_file_that_cannot_be_created_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/chat.db"
    line = _one_line_error(run_cli("migrate", env=clean_env(DATABASE_URL=url)))
    assert "unable to open database file" in line


def test_a_port_in_use_is_one_line_naming_the_settings(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line_error(run_cli("serve", env=clean_env(
            PORT=str(port), TORNCHAT_HOST="127.0.0.1"), cwd=str(tmp_path)))
    assert f"cannot listen on 127.0.0.1:{port} (TORNCHAT_HOST, PORT)" in line
    assert "Address already in use" in line


def test_events_status_does_not_create_a_database_it_cannot_find(tmp_path):
    line = _one_line_error(run_cli("events", "status", cwd=str(tmp_path)))
    assert "tornchat migrate" in line
    assert not (tmp_path / "tornchat.db").exists()
    assert run_cli("migrate", cwd=str(tmp_path)).returncode == 0
    status = run_cli("events", "status", cwd=str(tmp_path))
    assert status.returncode == 0
    assert '"pending": 0' in status.stdout


@pytest.mark.postgres
def test_events_status_on_a_stale_schema_says_to_migrate():
    with fresh_postgres_database() as url:
        line = _one_line_error(run_cli("events", "status", env=clean_env(DATABASE_URL=url)))
    assert "pending): run `tornchat migrate` first" in line


def test_more_than_one_process_without_redis_is_refused_naming_the_count(tmp_path):
    result = run_cli("serve", "--processes", "3", cwd=str(tmp_path))
    assert result.returncode == 2
    assert "TORNCHAT_PROCESSES: 3 processes need REDIS_URL" in result.stderr
    assert not (tmp_path / "tornchat.db").exists()  # refused before touching anything
