"""`just up` / `just down`: run Redis, the control plane and the data plane in the foreground as one unit.

`up` creates the env file when missing, starts an embedded private redis-server when REDIS_URL is empty, then
`python -m control_plane` and `python -m data_plane`, each in its own process group (so a terminal's Ctrl-C
reaches only this supervisor, which then stops them in order). Their output is relayed line by line with a
coloured name prefix and appended to `<state>/logs/combined.log`. Once every health check passes it prints
the URLs. Invariants:
- every process it starts is stopped before it exits (TERM to the group, KILL after a grace period, then
  KILL to whatever is left of the group), Redis last;
- if any child exits on its own, everything stops and `up` exits non-zero showing that child's last lines;
- `<state>/up.pids` (JSON) names the supervisor and every child while they run, so `down` can stop them
  (by signalling the supervisor, or the children directly when the supervisor itself was killed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from deploy.local.env_file import ensure_env_file
from deploy.local.processes import pid_alive
from deploy.local.state_paths import StatePaths, state_paths
from shared.config import ENV_FILE_VARIABLE, Settings, load_settings
from shared.redis_client import create_redis

STOP_GRACE_SECONDS = 5.0
STARTUP_TIMEOUT_SECONDS = 30.0
REDIS_READY_TIMEOUT_SECONDS = 10.0
TAIL_LINES = 30

_COLOURS = {"redis": "\033[31m", "control-plane": "\033[36m", "data-plane": "\033[35m"}
_RESET = "\033[0m"
_BOLD = "\033[1m"


class StartupError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------- plan (pure)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]


def embedded_redis_port(settings: Settings) -> int | None:
    """The port of the redis-server we must start ourselves, or None when REDIS_URL points elsewhere."""
    if settings.REDIS_URL:
        return None
    return urlsplit(settings.effective_redis_url).port or 6379


def redis_config_text(*, port: int, password: str, data_dir: Path) -> str:
    # A config file (mode 0600) rather than argv keeps the password out of `ps`.
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            f'requirepass "{password}"',
            "daemonize no",
            f'dir "{data_dir}"',
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            'save ""',
            "loglevel notice",
            'logfile ""',
            "",
        ]
    )


def plan_children(python: str, redis_config: Path | None) -> list[ChildSpec]:
    children = []
    if redis_config is not None:
        children.append(ChildSpec("redis", ("redis-server", str(redis_config))))
    children.append(ChildSpec("control-plane", (python, "-m", "control_plane")))
    children.append(ChildSpec("data-plane", (python, "-m", "data_plane")))
    return children


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def describe_stop(returncode: int | None, *, killed: bool) -> str:
    """How a child we asked to stop ended: exiting (0) or dying of our SIGTERM is a clean stop."""
    if not killed and returncode in (0, -signal.SIGTERM):
        return "stopped cleanly"
    return describe_exit(returncode)


def display_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def banner_lines(settings: Settings, paths: StatePaths, *, embedded_redis: bool) -> list[str]:
    api = f"http://{display_host(settings.API_HOST)}:{settings.API_PORT}"
    internal = f"http://{display_host(settings.INTERNAL_HOST)}:{settings.INTERNAL_PORT}"
    redis_note = f"embedded, data in {paths.redis_dir}" if embedded_redis else "external (REDIS_URL)"
    safe_redis = urlsplit(settings.effective_redis_url)._replace(netloc=_netloc_without_password(settings))
    return [
        "mcp-http-proxy is up",
        f"  API            {api}/api/v1/",
        f"  API docs       {api}/docs",
        f"  Data plane     http://{display_host(settings.BIND_HOST)}:{settings.HTTP_PORT}/",
        f"  Health/metrics {internal}/health  {internal}/metrics",
        f"  Redis          {safe_redis.geturl()} ({redis_note})",
        f"  Admin token    ADMIN_TOKEN in {paths.env_file}",
        f"  Logs           just logs  ({paths.combined_log})",
        "Press Ctrl-C to stop everything.",
    ]


def _netloc_without_password(settings: Settings) -> str:
    parts = urlsplit(settings.effective_redis_url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


# ------------------------------------------------------------------------------------------------ pids file


def write_pids(path: Path, supervisor_pid: int, children: dict[str, int]) -> None:
    payload = {"supervisor": supervisor_pid, "children": children}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def read_pids(path: Path) -> tuple[int, dict[str, int]] | None:
    try:
        payload = json.loads(path.read_text())
        return int(payload["supervisor"]), {str(k): int(v) for k, v in payload["children"].items()}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(
            f"{path} is not a pids file written by `just up` ({exc}); remove it by hand"
        ) from exc


# ------------------------------------------------------------------------------------------------ IO shell


@dataclass
class Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


class LogSink:
    """Prefixed lines to the terminal (coloured when it is one) and, plain, to the combined log."""

    def __init__(self, combined_log: Path, out: TextIO) -> None:
        combined_log.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(combined_log, "a", encoding="utf-8", buffering=1)
        self._out: TextIO | None = out
        self._colour = out.isatty() and "NO_COLOR" not in os.environ
        self._width = max(len(name) for name in _COLOURS)

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self._width}} | "
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._file.write(f"{stamp} {prefix}{text}\n")
        if self._out is None:
            return
        try:
            if self._colour:
                self._out.write(f"{_COLOURS.get(name, _BOLD)}{prefix}{_RESET}{text}\n")
            else:
                self._out.write(f"{prefix}{text}\n")
            self._out.flush()
        except OSError:
            # The terminal went away (closed pipe): keep logging to the file, never stall the children.
            self._out = None

    def close(self) -> None:
        self._file.close()


class Supervisor:
    def __init__(self, paths: StatePaths, settings: Settings, sink: LogSink) -> None:
        self.paths = paths
        self.settings = settings
        self.sink = sink
        self.children: list[Child] = []
        self.stop_requested = asyncio.Event()
        self.force_kill = asyncio.Event()

    # --- signals
    def on_signal(self, signum: int) -> None:
        if self.stop_requested.is_set():
            # A second Ctrl-C means "now": skip the grace period.
            self.force_kill.set()
            self.sink.line("supervisor", "second signal: killing without grace")
            return
        self.sink.line("supervisor", f"{signal.Signals(signum).name}: stopping everything")
        self.stop_requested.set()

    # --- lifecycle
    async def start(self, spec: ChildSpec, env: dict[str, str]) -> Child:
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: the terminal's Ctrl-C reaches only us
            )
        except OSError as exc:  # binary missing or not executable
            raise StartupError(f"cannot start {spec.name} ({spec.argv[0]}): {exc}") from exc
        child = Child(spec=spec, process=process)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        write_pids(self.paths.pids_file, os.getpid(), {c.spec.name: c.pid for c in self.children})
        self.sink.line("supervisor", f"started {spec.name} (pid {process.pid})")
        return child

    async def _pump(self, child: Child) -> None:
        # This must keep reading whatever happens: a child whose pipe fills up blocks on its next log line.
        assert child.process.stdout is not None
        while True:
            try:
                raw = await child.process.stdout.readline()
            except ValueError:  # a line longer than the stream limit; asyncio has discarded it
                raw = b"[supervisor: over-long line dropped]"
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(text)
            self.sink.line(child.spec.name, text)

    async def stop_all(self) -> None:
        # Reverse start order: the planes first (they talk to Redis), Redis last.
        for child in reversed(self.children):
            await self._stop(child)
        for child in self.children:
            if child.pump is not None:
                child.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump

    async def _stop(self, child: Child) -> None:
        killed = False
        if child.process.returncode is None:
            _signal_group(child.pid, signal.SIGKILL if self.force_kill.is_set() else signal.SIGTERM)
            exited = asyncio.create_task(child.process.wait())
            forced = asyncio.create_task(self.force_kill.wait())
            await asyncio.wait(
                {exited, forced}, timeout=STOP_GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            forced.cancel()
            if not exited.done():
                reason = (
                    "second signal"
                    if self.force_kill.is_set()
                    else f"no exit {STOP_GRACE_SECONDS}s after TERM"
                )
                self.sink.line("supervisor", f"killing {child.spec.name} ({reason})")
                _signal_group(child.pid, signal.SIGKILL)
                killed = True
                await exited
        # Anything the child left behind in its group (workers, shells) is an orphan now.
        _signal_group(child.pid, signal.SIGKILL)
        how = describe_stop(child.process.returncode, killed=killed)
        self.sink.line("supervisor", f"stopped {child.spec.name} ({how})")

    # --- waiting
    async def wait_redis(self, redis_child: Child | None) -> None:
        client = create_redis(self.settings, max_connections=2)
        deadline = time.monotonic() + REDIS_READY_TIMEOUT_SECONDS
        last_error: Exception | None = None
        try:
            while True:
                self._raise_if_exited()
                try:
                    if await client.ping():
                        return
                except Exception as exc:  # any connection/auth error means "not yet"
                    last_error = exc
                if time.monotonic() > deadline:
                    where = "embedded redis-server" if redis_child else f"Redis at {self.settings.REDIS_URL}"
                    raise StartupError(f"{where} not answering PING: {last_error!r}")
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()

    async def wait_healthy(self) -> None:
        api = f"http://{display_host(self.settings.API_HOST)}:{self.settings.API_PORT}/health"
        internal = f"http://{display_host(self.settings.INTERNAL_HOST)}:{self.settings.INTERNAL_PORT}/health"
        pending = {"control-plane": api, "data-plane": internal}
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        last: dict[str, str] = {}
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while pending:
                self._raise_if_exited()
                for name, url in list(pending.items()):
                    try:
                        response = await client.get(url)
                    except httpx.HTTPError as exc:
                        last[name] = repr(exc)
                        continue
                    if response.status_code == 200:
                        del pending[name]
                    else:
                        last[name] = f"{response.status_code} {response.text[:200]}"
                if pending and time.monotonic() > deadline:
                    details = "; ".join(f"{n} ({pending[n]}): {last.get(n, '?')}" for n in pending)
                    raise StartupError(f"not healthy after {STARTUP_TIMEOUT_SECONDS}s: {details}")
                if pending:
                    await asyncio.sleep(0.1)

    def _raise_if_exited(self) -> None:
        if self.stop_requested.is_set():
            raise StopRequested
        for child in self.children:
            if child.process.returncode is not None:
                raise ChildExited(child)

    async def wait_until_done(self) -> Child | None:
        """Block until a stop signal (returns None) or until a child exits on its own (returns it)."""
        waits = {asyncio.create_task(c.process.wait()): c for c in self.children}
        stop = asyncio.create_task(self.stop_requested.wait())
        done, _ = await asyncio.wait({stop, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *waits):
            task.cancel()
        for task in waits:
            if task in done:
                return waits[task]
        return None


class StopRequested(Exception):
    pass


class ChildExited(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.spec.name)
        self.child = child


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _drain_pump(child: Child) -> None:
    # Let the pump read what the dead child wrote last before we print its tail.
    if child.pump is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(child.pump), 1.0)


def access_log_child(python: str) -> ChildSpec:
    """`just up -v`: one line per request, followed from the request log by `mhp logs tail -f` (it finds the
    API and the admin token in the env file, as mhp always does)."""
    return ChildSpec("access", (python, "-m", "control_plane.cli.main", "logs", "tail", "-f", "-n", "0"))


async def run_up(paths: StatePaths, out: TextIO, *, access_log: bool = False) -> int:
    if ensure_env_file(paths.env_file):
        print(f"created {paths.env_file} with fresh secrets (ADMIN_TOKEN, REDIS_PASSWORD, keys)", file=out)
    os.environ[ENV_FILE_VARIABLE] = str(paths.env_file)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"invalid settings in {paths.env_file} or the environment:\n{exc}", file=sys.stderr)
        return 2

    existing = read_pids(paths.pids_file)
    if existing is not None and (pid_alive(existing[0]) or any(pid_alive(p) for p in existing[1].values())):
        print(
            f"already running (pid {existing[0]}, see {paths.pids_file}); stop it with `just down`", file=out
        )
        return 1

    paths.state_dir.mkdir(parents=True, exist_ok=True)
    port = embedded_redis_port(settings)
    redis_config: Path | None = None
    if port is not None:
        if _port_in_use(port):
            print(
                f"port {port} on 127.0.0.1 is busy, so the embedded redis cannot start: "
                f"set EMBEDDED_REDIS_PORT in {paths.env_file} (or REDIS_URL to use that Redis)",
                file=sys.stderr,
            )
            return 1
        if not settings.REDIS_PASSWORD:
            print(
                f"REDIS_PASSWORD is empty in {paths.env_file}; the embedded redis needs one", file=sys.stderr
            )
            return 1
        # The AOF holds token hashes and encrypted keys: private to this user.
        paths.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        redis_config = paths.redis_config
        redis_config.touch(mode=0o600, exist_ok=True)
        os.chmod(redis_config, 0o600)
        redis_config.write_text(
            redis_config_text(port=port, password=settings.REDIS_PASSWORD, data_dir=paths.redis_dir)
        )

    sink = LogSink(paths.combined_log, out)
    supervisor = Supervisor(paths, settings, sink)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, supervisor.on_signal, signum)

    env = dict(os.environ)
    env[ENV_FILE_VARIABLE] = str(paths.env_file)
    env["PYTHONUNBUFFERED"] = "1"
    write_pids(paths.pids_file, os.getpid(), {})
    exit_code = 0
    try:
        specs = plan_children(sys.executable, redis_config)
        redis_child = None
        if specs[0].name == "redis":
            redis_child = await supervisor.start(specs.pop(0), env)
        await supervisor.wait_redis(redis_child)
        for spec in specs:
            await supervisor.start(spec, env)
        await supervisor.wait_healthy()
        if access_log:
            await supervisor.start(access_log_child(sys.executable), env)
        for text in banner_lines(settings, paths, embedded_redis=redis_child is not None):
            sink.line("supervisor", text)
        dead = await supervisor.wait_until_done()
        if dead is not None:
            raise ChildExited(dead)
    except StopRequested:
        pass
    except ChildExited as exc:
        child = exc.child
        await _drain_pump(child)
        how = describe_exit(child.process.returncode)
        sink.line("supervisor", f"{child.spec.name} exited ({how}); stopping everything")
        sink.line("supervisor", f"last lines of {child.spec.name}:")
        for text in child.tail:
            sink.line(child.spec.name, text)
        exit_code = 1
    except StartupError as exc:
        sink.line("supervisor", f"startup failed: {exc}")
        for child in supervisor.children:
            for text in list(child.tail)[-10:]:
                sink.line(child.spec.name, text)
        exit_code = 1
    finally:
        await supervisor.stop_all()
        with contextlib.suppress(FileNotFoundError):
            paths.pids_file.unlink()
        sink.close()
    return exit_code


def run_down(paths: StatePaths, timeout_seconds: float = 3 * STOP_GRACE_SECONDS) -> int:
    pids = read_pids(paths.pids_file)
    if pids is None:
        print(f"nothing to stop ({paths.pids_file} does not exist)")
        return 0
    supervisor_pid, children = pids
    if pid_alive(supervisor_pid):
        print(f"stopping `just up` (supervisor pid {supervisor_pid})")
        os.kill(supervisor_pid, signal.SIGTERM)
    else:
        # The supervisor was killed without cleaning up: stop its children ourselves.
        print("supervisor is gone; stopping its children directly")
        for pid in children.values():
            _signal_group(pid, signal.SIGTERM)
    everything = [supervisor_pid, *children.values()]
    deadline = time.monotonic() + timeout_seconds
    while any(pid_alive(p) for p in everything) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in everything if pid_alive(p)]
    for pid in survivors:
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        if not pid_alive(supervisor_pid):
            paths.pids_file.unlink()
    if survivors:
        print(f"killed processes that did not stop in {timeout_seconds}s: {survivors}")
        return 1
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="up: also print one access line per request"
    )
    args = parser.parse_args(argv)
    paths = state_paths()
    if args.command == "down":
        return run_down(paths)
    return asyncio.run(run_up(paths, sys.stdout, access_log=args.verbose))


if __name__ == "__main__":
    sys.exit(main())
