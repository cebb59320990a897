"""The history and list benchmark runs end to end on PostgreSQL (tiny sizes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.services import fresh_postgres_database


@pytest.mark.postgres
def test_history_bench_prints_every_figure():
    with fresh_postgres_database():  # fails in CI, skips elsewhere, without PostgreSQL
        pass
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.history_bench", "--conversations", "60",
         "--big", "300", "--requests", "5"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for figure in ("first page", "deep page", "(newest)", "beforeSeq deep", "sync of 50"):
        assert figure in result.stdout, result.stdout
