"""loadtest.looplag: a server whose loop is held up writes down how long."""

from __future__ import annotations

import signal
import time

from harness.ports import wait_until
from harness.server import ServerProcess
from loadtest import looplag


def test_a_stopped_worker_reports_its_loop_late_by_about_the_stop(tmp_path):
    lag = tmp_path / "lag"
    path = str(lag)
    server = ServerProcess(env={"DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"},
                           cwd=str(tmp_path), module=("loadtest.looplag", path)).start()
    try:
        assert server.proc is not None
        wait_until(lambda: lag.exists() and " start " in lag.read_text(), 10,
                   what="the worker's start line")
        before = time.time()
        server.signal(signal.SIGSTOP)
        time.sleep(0.3)
        server.signal(signal.SIGCONT)
        late = wait_until(lambda: [ms for ms in looplag.lateness(path, before, time.time() + 1)
                                   if ms > 200], 10, what="a late tick")
        assert max(late) < 2000
    finally:
        server.stop()
