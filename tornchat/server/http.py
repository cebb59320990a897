"""The plain HTTP endpoints: ``GET /health``, ``GET /health/live`` and ``GET /metrics``.

Each handler gets only what it reads (a health check to await, the metrics to
render), not the application object. IOLoop thread only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from tornchat.metrics import Metrics

#: (HTTP status, body) of one health check
HealthCheck = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class HealthHandler(tornado.web.RequestHandler):
    """Dependency states and live connections, 200 or 503."""

    def initialize(self, check: HealthCheck) -> None:
        self._check = check

    async def get(self) -> None:
        status, body = await self._check()
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class LiveHandler(tornado.web.RequestHandler):
    """200 whenever the worker's event loop gets to answer; asks no dependency.

    For liveness probes: ``/health`` is 503 while the database or Redis is
    down, and a liveness probe on it would restart every pod during such an
    outage, each restart then failing on the same database. This one fails
    only when the worker itself no longer answers."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish({"status": "alive"})


class MetricsHandler(tornado.web.RequestHandler):
    """Prometheus text exposition of this worker (or of all, when forked)."""

    def initialize(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", Metrics.CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(self._metrics.render())
