"""Dockerfile: hadolint-clean, and the commands it runs exist in the package."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from tests.deploy.tools import REPO, require_tool, tool_env

pytestmark = pytest.mark.deploy

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _last(keyword: str) -> str:
    values = [rest for kw, rest in _instructions() if kw == keyword]
    assert values, f"Dockerfile has no {keyword}"
    return values[-1]


def test_hadolint_clean() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        env=tool_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_runtime() -> None:
    froms = [rest for kw, rest in _instructions() if kw == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert "COPY --from=build" in DOCKERFILE.read_text(encoding="utf-8")
    user = _last("USER").split(":")[0]
    assert user not in ("root", "0"), "the runtime stage must not run as root"
    assert user.isdigit(), "a numeric USER lets Kubernetes enforce runAsNonRoot"
    assert _last("EXPOSE") == "4004"


def test_exec_form_entrypoint_and_healthcheck() -> None:
    # JSON (exec) form: tornchat is PID 1 and receives SIGTERM for its drain.
    entrypoint = json.loads(_last("ENTRYPOINT"))
    command = json.loads(_last("CMD"))
    assert entrypoint + command == ["tornchat", "serve"]
    healthcheck = _last("HEALTHCHECK")
    assert healthcheck.startswith("--") and " CMD " in f" {healthcheck} "
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["tornchat", "healthcheck"]


def test_environment_uses_seed_variable_names() -> None:
    env = " ".join(rest for kw, rest in _instructions() if kw == "ENV")
    names = {pair.split("=", 1)[0] for pair in shlex.split(env)}
    assert {"PORT", "TORNCHAT_HOST", "TORNCHAT_ENV"} <= names
    assert "ACCESS_TOKEN_SECRET" not in names, "never bake a secret into the image"


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"**/.git", "**/.venv*", "tests/"} <= ignored
    for needed in ("setup.py", "README.md", "tornchat", "tornchat/", "conf", "conf/"):
        assert needed not in ignored, f"{needed} is needed by `pip install .`"


def _help(tornchat: str, *args: str) -> str:
    result = subprocess.run(
        [tornchat, *args, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_image_commands_exist_in_the_installed_package() -> None:
    tornchat = require_tool("tornchat", hint="pip install .")
    commands = _help(tornchat)
    for command in ("serve", "migrate", "healthcheck"):
        assert re.search(rf"^\s+{command}\b", commands, re.MULTILINE), commands
    assert "--processes" in _help(tornchat, "serve")
    assert "--url" in _help(tornchat, "healthcheck")
