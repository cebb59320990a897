"""Ansible: ansible-lint (production profile), --syntax-check, and a real run of
site.yml against this machine (connection: local) that installs tornchat from
the checkout into a temporary prefix, starts it without systemd, checks
/health, proves a second run changes nothing, and stops it again."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.ports import free_port
from harness.services import unavailable
from tests.deploy.tools import ANSIBLE_DIR, REPO, require_tool, tool_env

pytestmark = pytest.mark.deploy

SERVICE_USER = "tornchat-ci"
SECRET = "ci-only-access-token-secret-0123456789abcdef"
API_KEY = "ansible-test-server-api-key-0123456789abcdef"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
# Left out of the copy of the checkout the role installs from.
NOT_PACKAGE_SOURCE = (
    ".git",
    ".venv*",
    "venv",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    "build",
    "dist",
    ".*_cache",
    "results",
    "*.db",
    "*.db-*",
)


def _env() -> dict[str, str]:
    env = tool_env()
    env["PATH"] = os.pathsep.join([env["PATH"], "/usr/sbin", "/sbin"])
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    return env


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ansible_lint_production_profile() -> None:
    lint = require_tool("ansible-lint")
    result = _run([lint, "--profile", "production", "--offline", "--nocolor"], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


def test_syntax_check() -> None:
    playbook = require_tool("ansible-playbook")
    result = _run(
        [playbook, "-i", "inventory.example.yml", "site.yml", "--syntax-check"], timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real run against localhost ----------------------------------------------------------------


@dataclass
class Recap:
    ok: int
    changed: int
    unreachable: int
    failed: int
    output: str


@dataclass
class Deployment:
    base: Path
    port: int
    playbook: str
    inventory: Path
    extra_vars: Path

    @property
    def pid_file(self) -> Path:
        return self.base / "run" / "tornchat.pid"

    def play(self, *extra: str) -> Recap:
        result = _run(
            [
                self.playbook,
                "-i",
                str(self.inventory),
                "site.yml",
                "-e",
                f"@{self.extra_vars}",
                *extra,
            ],
            timeout=400,
        )
        output = result.stdout + result.stderr
        match = RECAP.search(output)
        assert match, output
        counts = {key: int(value) for key, value in match.groupdict().items()}
        assert result.returncode == 0 and counts["failed"] == 0, output
        return Recap(output=output, **counts)

    def health(self) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return json.loads(response.read())

    def kill_leftover(self) -> None:
        if self.pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(self.pid_file.read_text()), signal.SIGKILL)


def _venv_python() -> str:
    """An interpreter the unprivileged service user can run (a pyenv build
    under /root is not), with venv support and Python >= 3.11."""
    for candidate in ("/usr/bin/python3", sys.executable):
        check = subprocess.run(
            [candidate, "-c", "import sys, ensurepip, venv; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            check=False,
        )
        if Path(candidate).exists() and check.returncode == 0:
            return candidate
    pytest.fail("no Python >= 3.11 with venv support for the service")


def _copy_package_source(destination: Path) -> None:
    """The role builds from a source tree on the host: give it a copy of the
    checkout, so the build's egg-info and build/ never land in the checkout."""
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(*NOT_PACKAGE_SOURCE))


def _remove_service_user() -> None:
    for command, name in (("userdel", SERVICE_USER), ("groupdel", SERVICE_USER)):
        tool = shutil.which(command, path="/usr/sbin:/sbin:/usr/bin")
        if tool:
            subprocess.run([tool, name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    playbook = require_tool("ansible-playbook")
    for tool in ("start-stop-daemon", "setpriv"):
        if not shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin"):
            pytest.fail(f"{tool} is missing: this test needs a Debian/Ubuntu host")
    if os.geteuid() != 0:
        unavailable("the live Ansible run creates a system user: run it as root (CI does)")
    base = Path(tempfile.mkdtemp(prefix="tornchat-ansible-"))
    base.chmod(0o755)  # the service user must reach its virtualenv inside
    _copy_package_source(base / "src")
    port = free_port()
    inventory = base / "inventory.ini"
    inventory.write_text(
        "[tornchat]\nlocalhost ansible_connection=local ansible_become=false "
        f"ansible_python_interpreter={sys.executable}\n",
        encoding="utf-8",
    )
    extra_vars = base / "vars.yml"
    variables = {
        "tornchat_install_source": str(base / "src"),
        "tornchat_python": _venv_python(),
        "tornchat_install_system_packages": False,
        "tornchat_prefix": str(base / "opt"),
        "tornchat_config_dir": str(base / "etc"),
        "tornchat_data_dir": str(base / "data"),
        "tornchat_log_dir": str(base / "log"),
        "tornchat_run_dir": str(base / "run"),
        "tornchat_systemd_unit_dir": str(base / "systemd"),
        "tornchat_user": SERVICE_USER,
        "tornchat_group": SERVICE_USER,
        "tornchat_manage_systemd": False,
        "tornchat_host": "127.0.0.1",
        "tornchat_port": port,
        "tornchat_access_token_secret": SECRET,
        "tornchat_api_key": API_KEY,
        "tornchat_healthcheck_delay": 1,
    }
    extra_vars.write_text(yaml.safe_dump(variables), encoding="utf-8")
    deployed = Deployment(base, port, playbook, inventory, extra_vars)
    try:
        yield deployed
    finally:
        deployed.kill_leftover()
        shutil.rmtree(base, ignore_errors=True)
        _remove_service_user()


@pytest.fixture(scope="module")
def first_run(deployment: Deployment) -> Recap:
    return deployment.play()


@pytest.fixture(scope="module")
def second_run(deployment: Deployment, first_run: Recap) -> Recap:
    return deployment.play()


def test_first_run_installs_starts_and_checks_health(
    deployment: Deployment, first_run: Recap
) -> None:
    assert first_run.changed > 0
    assert "Check that tornchat answers on /health" in first_run.output
    health = deployment.health()
    assert health["status"] == "ok"
    pid = int(deployment.pid_file.read_text())
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
    assert pwd.getpwuid(uid).pw_name == SERVICE_USER, "the service must not run as root"
    assert "NoNewPrivs:\t1" in status


def test_second_run_changes_nothing(deployment: Deployment, second_run: Recap) -> None:
    assert second_run.changed == 0, second_run.output
    assert deployment.health()["status"] == "ok"


def test_files_and_permissions(deployment: Deployment, first_run: Recap) -> None:
    etc = deployment.base / "etc"
    secrets = etc / "secrets.env"
    settings = etc / "tornchat.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert secrets.stat().st_uid == 0
    assert f"ACCESS_TOKEN_SECRET='{SECRET}'" in secrets.read_text(encoding="utf-8")
    assert f"TORNCHAT_API_KEY='{API_KEY}'" in secrets.read_text(encoding="utf-8")
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640
    assert grp.getgrgid(settings.stat().st_gid).gr_name == SERVICE_USER
    settings_text = settings.read_text(encoding="utf-8")
    assert SECRET not in settings_text and API_KEY not in settings_text
    assert f"PORT='{deployment.port}'" in settings_text
    # Code belongs to root: the service account cannot rewrite what it runs.
    venv = deployment.base / "opt" / "venv"
    assert venv.stat().st_uid == 0
    data = deployment.base / "data"
    assert pwd.getpwuid(data.stat().st_uid).pw_name == SERVICE_USER
    assert (data / "tornchat.db").exists(), "SQLite migrated in the data directory"


def test_wrapper_runs_commands_with_the_service_environment(
    deployment: Deployment, first_run: Recap
) -> None:
    wrapper = deployment.base / "opt" / "bin" / "tornchat-run"
    tornchat = deployment.base / "opt" / "venv" / "bin" / "tornchat"
    result = subprocess.run(
        [str(wrapper), str(tornchat), "token", "user-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count(".") == 2, "a JWT"
    assert "development secret" not in result.stderr


def test_systemd_unit_is_valid_and_hardened(deployment: Deployment, first_run: Recap) -> None:
    unit = deployment.base / "systemd" / "tornchat.service"
    text = unit.read_text(encoding="utf-8")
    for directive in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        f"User={SERVICE_USER}\n",
        f"ReadWritePaths={deployment.base / 'data'}\n",
        f"EnvironmentFile={deployment.base / 'etc' / 'secrets.env'}\n",
    ):
        assert directive in text, directive
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: the unit was checked textually only")
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Unknown" not in verify.stderr and "ignoring" not in verify.stderr, verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    if exposure:  # systemd >= 250
        assert float(exposure.group(1)) <= 2.0, security.stdout


def test_stop_run_stops_the_service(deployment: Deployment, second_run: Recap) -> None:
    recap = deployment.play("-e", "tornchat_state=stopped")
    assert recap.changed == 1, recap.output
    assert not deployment.pid_file.exists()
    with pytest.raises(OSError):
        deployment.health()
