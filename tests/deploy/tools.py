"""Paths and tool lookups shared by the deployment-surface tests.

A missing tool skips its tests on a developer machine, but fails them in CI
(``CI=true``), where a skip would hide an untested surface
(:func:`harness.services.unavailable`).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from harness.services import unavailable

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tornchat"
ANSIBLE_DIR = REPO / "ansible"
INSTALL_HINT = "pip install -r tests/deploy/requirements.txt"


def require_tool(name: str, hint: str = INSTALL_HINT) -> str:
    """Absolute path of a command, looked up on PATH and beside this Python."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        unavailable(f"{name!r} is not installed: {hint}")
    return str(found)


def require_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"the Python module {name!r} is not installed: {INSTALL_HINT}")
        raise  # unreachable: unavailable() always raises


def tool_env() -> dict[str, str]:
    """Environment for child tools: this Python's bin first, no colours."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", PY_COLORS="0")
    return env
