"""The idle-memory probe runs end to end and reports per-connection figures."""

from __future__ import annotations

import re
import subprocess
import sys

from harness.ports import free_port


def test_memprobe_reports_rss_and_the_largest_heap_holders() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.memprobe", "--connections", "60", "--top", "5",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^60 idle authenticated connections: [\d,]+ bytes of RSS each$",
                     result.stdout, re.MULTILINE), result.stdout
    assert "Python heap:" in result.stdout
    assert len(re.findall(r"^\s+[\d,-]+ B  \S+:\d+$", result.stdout, re.MULTILINE)) == 5
