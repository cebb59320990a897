"""The history, list and batch benchmarks run end to end on PostgreSQL (tiny sizes)."""

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


@pytest.mark.postgres
def test_batch_bench_prints_a_row_per_batch_size():
    with fresh_postgres_database():
        pass
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.batch_bench", "--sizes", "1,3", "--batches", "20",
         "--repeats", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")
            and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 3"], result.stdout
