"""Deployment-surface tests (Docker, Compose, Helm, Ansible).

Each surface is checked with the real tool that runs without a Docker engine
or a cluster; the tools come from ``tests/deploy/requirements.txt`` and are
looked up by ``tests/deploy/tools.py``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: Docker, Compose, Helm and Ansible surfaces")
