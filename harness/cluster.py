"""Instances of ``tornchat serve --processes N`` and their worker processes."""

from __future__ import annotations

from collections.abc import Mapping

from harness.ports import wait_until
from harness.server import ServerProcess

#: fast liveness so the tests see expiry and reconnects in seconds, not minutes
FAST_ENV = {
    "TORNCHAT_HEARTBEAT_INTERVAL": "3",  # connection slots expire after 7.5 s
    "TORNCHAT_REDIS_PROBE_INTERVAL": "1",
    "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000",
    "TORNCHAT_RATE_LIMIT_BURST": "1000",
}


def workers_of(server: ServerProcess) -> list[int]:
    """PIDs of the worker processes of a ``serve --processes N`` instance."""
    assert server.proc is not None
    pid = server.proc.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def all_workers_healthy(server: ServerProcess, workers: int) -> bool:
    """Every worker forked, has logged ``listening``, and /health answers 200.

    /health is answered by whichever worker wins the accept, so each worker's
    own start-up log line is what proves it is serving.
    """
    pids = workers_of(server)
    if len(pids) != (workers if workers > 1 else 0):  # 1 = no fork
        return False
    logs = server.logs()
    if not all(f'"listening", "process": {pid},' in logs for pid in pids):
        return False
    return all(server.health(timeout=2.0)[0] == 200 for _ in range(3))


def start_instances(env: Mapping[str, str], count: int = 2,
                    processes: int = 2) -> list[ServerProcess]:
    """``count`` instances (``FAST_ENV`` under ``env``), each with every worker healthy."""
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            server = ServerProcess(env={**FAST_ENV, **env},
                                   args=("--processes", str(processes))).start()
            servers.append(server)
            wait_until(lambda s=server: all_workers_healthy(s, processes), 20,
                       what=f"{processes} healthy workers on port {server.port}")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[ServerProcess]) -> None:
    """SIGTERM each instance; asserts each exited cleanly."""
    for server in servers:
        status = server.stop()
        assert status in (0, None), f"instance exited {status}:\n{server.logs()[-3000:]}"
