"""PROTOCOL section 6: ``GET /health``."""

from __future__ import annotations

from harness.wsclient import authed
from tests.storage.test_storage_outage import health


async def test_health_reports_every_dependency_and_the_connection_count(server):
    await authed(server.url, server.secret, "alice")
    status, body = await health(server)
    assert status == 200
    assert body["status"] == "ok"
    assert body["dependencies"] == {"database": "ok", "redis": "disabled", "kafka": "disabled"}
    assert body["connections"] == 1


async def test_the_liveness_endpoint_answers_without_asking_any_dependency(server):
    assert await health(server, "/health/live") == (200, {"status": "alive"})
