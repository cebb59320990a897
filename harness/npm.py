"""``npm ci`` for a folder of JavaScript the tests or benchmarks run (the
client's suite, the seed peer), only when its installed tree is missing or
older than its lock file."""

from __future__ import annotations

import subprocess
from pathlib import Path


def npm_ci(directory: Path, npm: str = "npm") -> None:
    """Install ``directory``'s locked dependencies; RuntimeError with npm's output."""
    installed = directory / "node_modules" / ".package-lock.json"
    lock = directory / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"npm ci in {directory} failed:\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-2000:]}")
