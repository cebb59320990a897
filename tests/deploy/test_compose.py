"""docker-compose.yml: valid against the Compose specification, and wired so
that `docker compose up -d --scale chat-service=3` works behind one port."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, require_module

pytestmark = pytest.mark.deploy

# Environment variable names the service reads (seed names + TORNCHAT_*).
SEED_NAMES = {
    "PORT",
    "DATABASE_URL",
    "ACCESS_TOKEN_SECRET",
    "REDIS_URL",
    "KAFKA_BROKER",
    "LOG_LEVEL",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the Compose specification's JSON schema
    # (compose-spec/compose-spec, Apache-2.0: see its vendor/licenses folder).
    require_module("check_jsonschema")
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def test_valid_against_compose_spec(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    jsonschema = require_module("jsonschema")
    validator_class = jsonschema.validators.validator_for(compose_schema)
    validator_class.check_schema(compose_schema)
    errors = sorted(validator_class(compose_schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_schema_catches_mistakes(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    """The validation above is not vacuous: a typo'd key is rejected."""
    jsonschema = require_module("jsonschema")
    broken = json.loads(json.dumps(compose))
    broken["services"]["chat-service"]["depend_on"] = ["redis"]
    validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
    assert not validator.is_valid(broken)


def test_services_and_official_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "kafka", "migrate", "chat-service", "lb"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"], "KRaft: no ZooKeeper"
    assert not any("zookeeper" in name for name in services)


def test_chat_service_scales_behind_the_load_balancer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    chat = services["chat-service"]
    # A fixed host port would make the 2nd replica of --scale fail to start.
    assert "ports" not in chat
    assert "container_name" not in chat
    assert "4004" in [str(port) for port in chat["expose"]]
    assert chat["command"][0] == "serve"
    lb = services["lb"]
    assert lb["ports"], "the load balancer is the single published port"
    conf = compose["configs"][lb["configs"][0]["source"]]["content"]
    assert "server chat-service:4004 resolve" in conf
    for directive in (
        "proxy_http_version 1.1",
        "Upgrade $$http_upgrade",
        "Connection $$connection_upgrade",
        "proxy_read_timeout",
    ):
        assert directive in conf, directive
    # Compose interpolates ${VAR} in config content: nginx's own $variables
    # must be written $$ or compose would substitute them.
    assert not re.search(r"(?<!\$)\$(?![\${])", conf.replace("$$", ""))


def test_migrations_run_once_before_the_servers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    chat_deps = services["chat-service"]["depends_on"]
    assert chat_deps["migrate"]["condition"] == "service_completed_successfully"
    for dependency in ("redis", "kafka"):
        assert chat_deps[dependency]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "kafka"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck to be waited on"


def test_environment_wires_every_backend(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["chat-service"]["environment"]
    assert services["migrate"]["environment"] == env
    assert set(env) >= SEED_NAMES
    assert all(name in SEED_NAMES or name.startswith("TORNCHAT_") for name in env)
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["KAFKA_BROKER"] == "kafka:9092"
    # No default secret: compose refuses to start until one is provided.
    assert env["ACCESS_TOKEN_SECRET"].startswith("${ACCESS_TOKEN_SECRET:?")
    grace = int(services["chat-service"]["stop_grace_period"].rstrip("s"))
    assert grace > int(env["TORNCHAT_SHUTDOWN_TIMEOUT"])
