"""Multiprocess metrics: each worker counts in its own file, and an update
costs no system call (tornchat.metrics.ProcessId)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import values

from tornchat.metrics import MULTIPROC_ENV, Metrics, ProcessId, prepare_multiprocess


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Multiprocess mode in a temporary directory; the value class restored after."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    prepare_multiprocess()
    yield tmp_path
    values.close_all_multiprocess_files()  # the mmap files of the temporary directory


def _sample(metrics: Metrics, name: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_process_id_is_the_pid_in_the_parent_and_in_a_forked_child() -> None:
    pid = ProcessId()
    assert pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports and leaves at once
        os.write(write, f"{pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    reported, actual = os.read(read, 100).decode().split()
    os.waitpid(child, 0)
    assert reported == actual == str(child)
    assert pid() == os.getpid()


def test_a_metric_update_makes_no_getpid_call(multiprocess_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    calls = 0
    real_getpid = os.getpid

    def counting_getpid() -> int:
        nonlocal calls
        calls += 1
        return real_getpid()

    with monkeypatch.context() as patched:
        patched.setattr(os, "getpid", counting_getpid)
        for _ in range(100):
            metrics.messages_sent.inc()
            metrics.delivery_latency.observe(0.002)
    assert calls == 0
    assert _sample(metrics, "tornchat_messages_sent_total") == 100


def test_a_worker_forked_after_counting_counts_in_its_own_file(multiprocess_dir: Path) -> None:
    metrics = Metrics()
    metrics.messages_sent.inc()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child counts and leaves
        metrics.messages_sent.inc(2)
        os._exit(0)
    os.waitpid(child, 0)
    files = sorted(path.name for path in multiprocess_dir.glob("counter_*.db"))
    assert files == sorted([f"counter_{os.getpid()}.db", f"counter_{child}.db"])
    assert _sample(metrics, "tornchat_messages_sent_total") == 3
