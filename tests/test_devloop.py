"""The dev loop end to end: `just up` with real processes (redis-server, control plane, data plane) in a temp
state dir on free ports, then Ctrl-C / a dying child / `just down`, checking by PID that nothing is left.
Plus the .env writer: every secret present and well-formed, an existing file never overwritten.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.local.env_file import (
    UNPRIVILEGED_HTTP_PORT,
    UNPRIVILEGED_HTTPS_PORT,
    ensure_env_file,
)
from deploy.local.processes import pid_alive
from shared.config import ENV_FILE_VARIABLE, Settings
from tests.harness.services import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
UP_DEADLINE_SECONDS = 15.0  # the bound for `just up` to have everything healthy
GONE_DEADLINE_SECONDS = 12.0  # TERM grace (5 s) per stuck child at worst, plus margin


# ------------------------------------------------------------------------------------------ .env generation


def _read_env(path: Path) -> Settings:
    return Settings(_env_file=str(path))  # type: ignore[call-arg]


def test_env_file_gets_every_secret_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "sub" / ".env"
    assert ensure_env_file(path, is_root=True) is True
    assert path.stat().st_mode & 0o777 == 0o600, "secrets must not be readable by other users"
    settings = _read_env(path)
    assert len(base64.urlsafe_b64decode(settings.REDIS_PASSWORD + "==")) >= 32
    assert settings.ADMIN_TOKEN.startswith("acm_") and len(settings.ADMIN_TOKEN) > 40
    assert len(base64.b64decode(settings.KEY_ENCRYPTION_KEY_B64, validate=True)) == 32
    # The token-signing key is never written to .env: it is generated in Redis, encrypted with the KEK.
    assert settings.OAUTH_JWT_PRIVATE_KEY_B64 == ""
    assert "PRIVATE KEY" not in path.read_text() and "OAUTH_JWT" not in path.read_text()
    # Root keeps the standard ports.
    assert (settings.HTTP_PORT, settings.HTTPS_PORT) == (80, 443)


def test_env_file_for_a_normal_user_uses_unprivileged_ports(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    ensure_env_file(path, is_root=False)
    settings = _read_env(path)
    assert (settings.HTTP_PORT, settings.HTTPS_PORT) == (UNPRIVILEGED_HTTP_PORT, UNPRIVILEGED_HTTPS_PORT)


def test_each_env_file_gets_fresh_secrets(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    ensure_env_file(first, is_root=True)
    ensure_env_file(second, is_root=True)
    a, b = _read_env(first), _read_env(second)
    for name in ("REDIS_PASSWORD", "ADMIN_TOKEN", "KEY_ENCRYPTION_KEY_B64"):
        assert getattr(a, name) and getattr(a, name) != getattr(b, name), name


def test_an_existing_env_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    original = b"ADMIN_TOKEN=acm_mine\n# my own notes\n"
    path.write_bytes(original)
    assert ensure_env_file(path, is_root=True) is False
    # The command-line entry too, as a real process.
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local.env_file", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "left unchanged" in result.stdout
    assert path.read_bytes() == original


# ---------------------------------------------------------------------------------------------- just up


def _just() -> str:
    beside_python = Path(sys.executable).parent / "just"
    found = str(beside_python) if beside_python.exists() else shutil.which("just")
    if found is None:
        pytest.fail("`just` is not installed (it is in the dev extra: pip install rust-just)")
    return found


@dataclass
class UpRun:
    process: subprocess.Popen[bytes]
    state_dir: Path
    env_file: Path
    env: dict[str, str]
    output: Path
    http_port: int
    api_port: int
    internal_port: int
    redis_port: int
    seen_pids: dict[str, int] = field(default_factory=dict)

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "up.pids"

    def pids(self) -> dict[str, int]:
        payload = json.loads(self.pids_file.read_text())
        pids = {"supervisor": payload["supervisor"], **payload["children"]}
        self.seen_pids.update(pids)  # remembered for teardown even if the file is gone by then
        return pids

    def output_text(self) -> str:
        return self.output.read_text(errors="replace")


def _clean_environment() -> dict[str, str]:
    # The developer's shell may export settings (REDIS_URL...); the run must see only its own env file.
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.pop("NO_COLOR", None)
    return env


@pytest.fixture
def up_run(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[UpRun]:
    """`just up`, with the arguments a test gives through indirect parametrisation (none by default)."""
    up_args: list[str] = getattr(request, "param", [])
    # Every recipe bootstraps first; do it here so the timed part below measures `up`, not a pip install.
    subprocess.run(["bash", str(REPO_ROOT / "deploy/local/bootstrap.sh")], check=True, timeout=600)
    state_dir = tmp_path / "state"
    env_file = tmp_path / "dev.env"
    ports = {name: free_port() for name in ("HTTP", "HTTPS", "PROXY", "API", "INTERNAL", "REDIS")}
    env_file.write_text(
        "\n".join(
            [
                "REDIS_PASSWORD=devloop-test-password-0123456789abcdef",
                "ADMIN_TOKEN=acm_devloop-test-admin-token-0123456789abcdef",
                "BIND_HOST=127.0.0.1",
                f"HTTP_PORT={ports['HTTP']}",
                f"HTTPS_PORT={ports['HTTPS']}",
                f"PROXY_PROTOCOL_PORT={ports['PROXY']}",
                f"API_PORT={ports['API']}",
                f"INTERNAL_PORT={ports['INTERNAL']}",
                f"EMBEDDED_REDIS_PORT={ports['REDIS']}",
                "",
            ]
        )
    )
    env = _clean_environment()
    env["MHP_STATE_DIR"] = str(state_dir)
    env[ENV_FILE_VARIABLE] = str(env_file)
    output = tmp_path / "up.out"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [_just(), "--justfile", str(REPO_ROOT / "justfile"), "up", *up_args],
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, like a terminal's foreground job: Ctrl-C is SIGINT to that group.
            start_new_session=True,
        )
    run = UpRun(
        process=process,
        state_dir=state_dir,
        env_file=env_file,
        env=env,
        output=output,
        http_port=ports["HTTP"],
        api_port=ports["API"],
        internal_port=ports["INTERNAL"],
        redis_port=ports["REDIS"],
    )
    try:
        yield run
    finally:
        # Whatever the test did, leave nothing behind: kill every recorded process group, then just.
        if run.pids_file.exists():
            run.pids()
        for pid in run.seen_pids.values():
            if pid_alive(pid):
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_until_up(run: UpRun) -> None:
    """Poll until the control plane reports Redis ok and the data plane answers; both within the bound."""
    started = time.monotonic()
    deadline = started + UP_DEADLINE_SECONDS
    last = "nothing yet"
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if run.process.poll() is not None:
                pytest.fail(f"`just up` exited with {run.process.returncode}:\n{run.output_text()[-4000:]}")
            try:
                health = client.get(f"http://127.0.0.1:{run.api_port}/health")
                answer = client.get(
                    f"http://127.0.0.1:{run.http_port}/some/path", headers={"Host": "nobody.devloop.test"}
                )
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                served = health.status_code == 200 and health.json().get("redis") == "ok"
                if served and answer.status_code == 404:
                    assert "nobody.devloop.test" in answer.text, answer.text
                    # The supervisor announces readiness once its own health checks pass too.
                    if "mcp-http-proxy is up" in run.output_text():
                        return
                last = f"health {health.status_code} {health.text[:200]}; data plane {answer.status_code}"
            time.sleep(0.1)
    pytest.fail(f"not up within {UP_DEADLINE_SECONDS}s ({last}):\n{run.output_text()[-4000:]}")


def _wait_for_pids_file(run: UpRun, names: set[str]) -> dict[str, int]:
    deadline = time.monotonic() + UP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if run.pids_file.exists():
            pids = run.pids()
            if names <= set(pids):
                return pids
        time.sleep(0.05)
    pytest.fail(f"{run.pids_file} never listed {sorted(names)}:\n{run.output_text()[-4000:]}")


def _assert_all_gone(pids: dict[str, int], run: UpRun) -> None:
    deadline = time.monotonic() + GONE_DEADLINE_SECONDS
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids.values()):
        time.sleep(0.05)
    alive = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert not alive, f"still running after {GONE_DEADLINE_SECONDS}s: {alive}\n{run.output_text()[-3000:]}"


def _first_output_of_just_logs(run: UpRun, wait_seconds: float = 20.0) -> str:
    """`just logs` follows forever: read until it shows something, then stop it (its whole group)."""
    follower = subprocess.Popen(
        [_just(), "--justfile", str(REPO_ROOT / "justfile"), "logs"],
        cwd=REPO_ROOT,
        env=run.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert follower.stdout is not None
    seen = b""
    try:
        deadline = time.monotonic() + wait_seconds
        while b"control-plane |" not in seen and time.monotonic() < deadline:
            readable, _, _ = select.select([follower.stdout], [], [], 0.2)
            if readable:
                chunk = os.read(follower.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait(timeout=10)
        follower.stdout.close()
    return seen.decode(errors="replace")


ALL_PROCESSES = {"supervisor", "redis", "control-plane", "data-plane"}


def test_just_up_serves_and_ctrl_c_leaves_no_process(up_run: UpRun) -> None:
    env_before = up_run.env_file.read_bytes()
    _wait_until_up(up_run)
    pids = _wait_for_pids_file(up_run, ALL_PROCESSES)
    assert all(pid_alive(pid) for pid in pids.values()), pids
    # `just redis-cli` reaches the embedded redis with the password from the env file.
    ping = subprocess.run(
        [_just(), "--justfile", str(REPO_ROOT / "justfile"), "redis-cli", "PING"],
        cwd=REPO_ROOT,
        env=up_run.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ping.stdout.strip().endswith("PONG"), ping.stdout + ping.stderr
    assert "control-plane |" in _first_output_of_just_logs(up_run)
    # The embedded redis persists with AOF under the state dir, and the combined log is written.
    assert (up_run.state_dir / "redis" / "appendonlydir").is_dir()
    assert "control-plane |" in (up_run.state_dir / "logs" / "combined.log").read_text()

    os.killpg(up_run.process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    up_run.process.wait(timeout=GONE_DEADLINE_SECONDS + 5)
    _assert_all_gone(pids, up_run)
    # just itself reports an interrupted recipe as 130 (128 + SIGINT), the shell convention for Ctrl-C; what
    # matters is that the supervisor stopped cleanly rather than because something failed.
    assert up_run.process.returncode in (0, 130), up_run.output_text()[-3000:]
    assert "SIGINT: stopping everything" in up_run.output_text()
    assert " exited (" not in up_run.output_text(), up_run.output_text()[-3000:]
    # A stop we asked for is reported as one, not as a kill.
    for name in ("control-plane", "data-plane", "redis"):
        assert f"stopped {name} (stopped cleanly)" in up_run.output_text(), up_run.output_text()[-3000:]
    assert "killed by SIGTERM" not in up_run.output_text()
    assert not up_run.pids_file.exists()
    assert up_run.env_file.read_bytes() == env_before, "`just up` must never rewrite an existing env file"


@pytest.mark.parametrize("up_run", [["-v"]], indirect=True)
def test_just_up_v_prints_an_access_line_per_request(up_run: UpRun) -> None:
    _wait_until_up(up_run)
    pids = _wait_for_pids_file(up_run, ALL_PROCESSES | {"access"})
    deadline = time.monotonic() + 20
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while "/seen/by/access 404" not in up_run.output_text() and time.monotonic() < deadline:
            client.get(
                f"http://127.0.0.1:{up_run.http_port}/seen/by/access", headers={"Host": "v.devloop.test"}
            )
            time.sleep(0.3)
    lines = [line for line in up_run.output_text().splitlines() if re.match(r"access +\| ", line)]
    assert any("v.devloop.test" in line and "/seen/by/access 404" in line for line in lines), lines
    os.killpg(up_run.process.pid, signal.SIGINT)
    up_run.process.wait(timeout=GONE_DEADLINE_SECONDS + 5)
    _assert_all_gone(pids, up_run)
    assert "access exited (" not in up_run.output_text(), up_run.output_text()[-3000:]


def test_a_dying_child_stops_everything_and_fails(up_run: UpRun) -> None:
    _wait_until_up(up_run)
    pids = _wait_for_pids_file(up_run, ALL_PROCESSES)
    os.kill(pids["data-plane"], signal.SIGKILL)
    up_run.process.wait(timeout=GONE_DEADLINE_SECONDS + 5)
    _assert_all_gone(pids, up_run)
    assert up_run.process.returncode != 0
    assert "data-plane exited" in up_run.output_text()


def test_just_down_stops_a_running_up(up_run: UpRun) -> None:
    _wait_until_up(up_run)
    pids = _wait_for_pids_file(up_run, ALL_PROCESSES)
    down = subprocess.run(
        [_just(), "--justfile", str(REPO_ROOT / "justfile"), "down"],
        cwd=REPO_ROOT,
        env=up_run.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    up_run.process.wait(timeout=GONE_DEADLINE_SECONDS + 5)
    _assert_all_gone(pids, up_run)


def test_a_second_up_refuses_while_one_runs(up_run: UpRun) -> None:
    _wait_until_up(up_run)
    second = subprocess.run(
        [_just(), "--justfile", str(REPO_ROOT / "justfile"), "up"],
        cwd=REPO_ROOT,
        env=up_run.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert "already running" in second.stdout + second.stderr
    assert up_run.process.poll() is None, "the first `up` must be untouched"


def test_up_refuses_clearly_when_the_embedded_redis_port_is_busy(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        env_file = tmp_path / "dev.env"
        env_file.write_text(f"REDIS_PASSWORD=x-0123456789abcdef\nEMBEDDED_REDIS_PORT={busy_port}\n")
        env = _clean_environment()
        env["MHP_STATE_DIR"] = str(tmp_path / "state")
        env[ENV_FILE_VARIABLE] = str(env_file)
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local.supervisor", "up"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {busy_port}" in result.stderr and "EMBEDDED_REDIS_PORT" in result.stderr, result.stderr
    assert not (tmp_path / "state" / "up.pids").exists(), "nothing was started, so nothing is recorded"


def _run_marker(marker: str, *pytest_args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MHP_PYTHON=sys.executable)
    return subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "deploy/local/pytest_marker.sh"),
            marker,
            "-p",
            "no:cacheprovider",
            *pytest_args,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_marker_without_tests_is_reported_not_failed() -> None:
    # tests/test_packaging.py has no `docker` tests, so pytest selects nothing (its exit code 5).
    result = _run_marker("docker", "tests/test_packaging.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no tests marked 'docker' yet" in result.stdout


def test_a_marker_run_still_fails_on_real_errors() -> None:
    result = _run_marker("docker", "tests/no_such_test_file.py")
    assert result.returncode not in (0, 5), result.stdout + result.stderr
