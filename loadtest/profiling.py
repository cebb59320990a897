"""Sample a running server with py-spy and say which code dominates.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... N``),
one line per distinct stack of every thread. From those we rank functions by
*self* samples (where the CPU is) and by *inclusive* samples (what it was
doing on behalf of), per thread name, which separates the IOLoop thread from
the database executor threads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def start_record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Begin sampling ``pid`` (GIL-holding stacks only, so waits are not counted)."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen([binary, "record", "--pid", str(pid), "--duration",
                             str(max(1, round(seconds))), "--rate", str(rate), "--format",
                             "raw", "--gil", "--threads", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``module.py:func``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{Path(match['file']).name}:{match['func']}"


def _is_tornchat_work(frame: str) -> bool:
    """A tornchat frame below the process's entry points (those include everything)."""
    return "tornchat/" in frame and not any(entry in frame for entry in _ENTRY_POINTS)


_ENTRY_POINTS = ("tornchat/cli.py", "tornchat/lifecycle.py", "tornchat/workers.py")


def summarize(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self share of samples, tornchat functions by inclusive
    share (time spent in them and their callees), and shares per thread."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else ""
        threads[thread] += count
        names = [_short(frame) for frame in frames if not frame.startswith(("thread",
                                                                             "process"))]
        if names:
            self_counts[names[-1]] += count
            modules[names[-1].split(":", 1)[0]] += count
        for name in {_short(frame) for frame in frames if _is_tornchat_work(frame)}:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(self_counts),
            "inclusive_pct": share(inclusive), "threads_pct": share(threads),
            "self_by_file_pct": share(modules)}
