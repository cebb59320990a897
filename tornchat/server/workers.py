"""The multi-process supervisor: fork N workers on one bound port, keep N alive.

``tornado.process.fork_processes`` forks and restarts crashed children, but
its parent neither forwards SIGTERM nor waits for a drain, and it gives up
after ``max_restarts``. :class:`Supervisor` is the same fork model with the
shutdown the contract needs:

- the parent binds the listening sockets and forks; each child runs
  ``worker(index)`` (which builds its own IOLoop, database pool and Redis
  clients, never the parent's) and exits with its return value;
- a worker that exits while the service is running is replaced (a worker
  slot that crashes ``CRASH_LIMIT`` times within ``CRASH_WINDOW`` seconds
  means the service is broken: the parent stops everything and exits 1);
- SIGTERM or SIGINT to the parent is forwarded as SIGTERM to every worker,
  each drains (PROTOCOL.md section 5), and the parent exits once all have;
  a worker still alive ``grace`` seconds later is SIGKILLed;
- if the parent itself dies, the kernel sends each worker SIGTERM (Linux
  ``PR_SET_PDEATHSIG``), so no orphan keeps serving the port.

Thread rule: the parent is single-threaded and runs no IOLoop; signal
handlers only set flags and forward signals.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
_POLL = 0.1
_PR_SET_PDEATHSIG = 1


def _drain_when_orphaned(parent: int) -> None:
    """Linux: have the kernel SIGTERM this worker if the supervisor dies (even SIGKILL),
    so a worker never keeps serving, unsupervised, on the port."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("could not ask to be signalled when the supervisor dies")
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(self, count: int, worker: Callable[[int], int], grace: float,
                 on_exit: Callable[[int], None] | None = None) -> None:
        """``worker(index)`` runs in each child; ``on_exit(pid)`` runs in the parent."""
        self._count = count
        self._worker = worker
        self._grace = grace
        self._on_exit = on_exit
        self._children: dict[int, int] = {}  # pid -> worker index
        self._crashes: dict[int, deque[float]] = {}
        self._stop_requested = False
        self._kill_at: float | None = None
        self._status = 0
        self._parent = os.getpid()

    def run(self) -> int:
        """Fork the workers and supervise them; returns the parent's exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        for index in range(self._count):
            self._spawn(index)
        log.info("supervising workers", extra={"workers": self._count, "pid": os.getpid()})
        while self._children:
            self._reap()
            if self._stop_requested and self._kill_at is None:
                self._begin_stop()
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._kill_all()
            time.sleep(_POLL)
        log.info("all workers exited", extra={"status": self._status})
        return self._status

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._become_worker(index)
        self._children[pid] = index
        log.info("worker started", extra={"worker": index, "workerPid": pid})

    def _become_worker(self, index: int) -> None:
        """In the child: run the worker and never return into the parent's loop."""
        status = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            _drain_when_orphaned(self._parent)
            status = self._worker(index)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker failed", extra={"worker": index})
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            index = self._children.pop(pid, None)
            if index is None:
                continue
            if self._on_exit is not None:
                self._on_exit(pid)
            self._worker_exited(pid, index, wait_status)

    def _worker_exited(self, pid: int, index: int, wait_status: int) -> None:
        if os.WIFSIGNALED(wait_status):
            how = f"killed by {signal.Signals(os.WTERMSIG(wait_status)).name}"
            failed = True
        else:
            code = os.waitstatus_to_exitcode(wait_status)
            how = f"exited with status {code}"
            failed = code != 0
        if self._stop_requested:
            if failed:
                self._status = 1
            log.info("worker stopped", extra={"worker": index, "workerPid": pid, "how": how})
            return
        log.error("worker died; starting a replacement", extra={
            "worker": index, "workerPid": pid, "how": how})
        if self._crash_looping(index):
            log.critical("worker keeps dying; stopping the service", extra={
                "worker": index, "crashes": CRASH_LIMIT, "windowSeconds": CRASH_WINDOW})
            self._status = 1
            self._stop_requested = True
            return
        self._spawn(index)

    def _crash_looping(self, index: int) -> bool:
        now = time.monotonic()
        crashes = self._crashes.setdefault(index, deque(maxlen=CRASH_LIMIT))
        crashes.append(now)
        return len(crashes) == CRASH_LIMIT and now - crashes[0] < CRASH_WINDOW

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def _begin_stop(self) -> None:
        log.info("stopping: draining every worker", extra={"workers": len(self._children)})
        self._kill_at = time.monotonic() + self._grace
        for pid in list(self._children):
            self._signal(pid, signal.SIGTERM)

    def _kill_all(self) -> None:
        log.error("workers overran the drain; killing them", extra={
            "workers": len(self._children)})
        self._status = 1
        for pid in list(self._children):
            self._signal(pid, signal.SIGKILL)
        self._kill_at = float("inf")

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
