"""The ``tornchat`` command line: help, token, migrate."""

from __future__ import annotations

import pytest

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


def test_healthcheck_fails_when_nothing_listens():
    result = run_cli("healthcheck", "--url", "http://127.0.0.1:9/health", "--timeout", "1")
    assert result.returncode == 1
    assert "unhealthy" in result.stderr
