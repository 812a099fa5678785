"""Our data plane as a benchmark target: a real Redis, one ProxyTarget written by the config-write contract,
and `python -m data_plane` pinned to the proxy core.

The config write is the one every writer follows (shared semantics): one MULTI/EXEC that stores the object,
bumps the config version and appends a change event, then a PUBLISH naming the new version.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pstats
import sys
from pathlib import Path
from typing import Any

import redis

from shared import keys
from shared.models import ChangeEvent, ProxyTarget
from tests.bench.peer_configs import BENCH_HOST
from tests.bench.targets import HOST, CorePlan, Target, pin_running, pinned
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open, start_redis

REPO_ROOT = Path(__file__).resolve().parents[2]
OURS_TLS_UNAVAILABLE = (
    "the data plane has no TLS listener the bench can configure yet (issue 4 brings HTTPS with "
    "certificates from Redis)"
)


def unavailable_reason() -> str | None:
    """Why `python -m data_plane` cannot run here, or None when it can."""
    try:
        spec = importlib.util.find_spec("data_plane.__main__")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return "data_plane/__main__.py does not exist yet (python -m data_plane is not available)"
    return None


def write_proxy(server: RedisServer, proxy: ProxyTarget) -> int:
    """Store `proxy` following the config-write contract; returns the new config version."""
    client = redis.Redis(host=server.host, port=server.port, password=server.password, decode_responses=True)
    try:
        with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # WATCH so the version named in the change event is exactly the one INCR produces.
                    pipe.watch(keys.config_version())  # type: ignore[no-untyped-call]
                    version = int(pipe.get(keys.config_version()) or 0) + 1
                    event = ChangeEvent(version=version, kind="proxy", action="created", name=proxy.hostname)
                    pipe.multi()
                    pipe.hset(keys.proxies(), proxy.hostname, proxy.model_dump_json())
                    pipe.incr(keys.config_version())
                    fields: dict[Any, Any] = event.to_stream_fields()
                    pipe.xadd(keys.changes_stream(), fields, maxlen=10000, approximate=True)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        client.publish(keys.changes_channel(), str(version))
        return version
    finally:
        client.close()


def start_ours(
    workdir: Path, plan: CorePlan, backend_port: int, *, profile_path: Path | None = None
) -> Target:
    """With `profile_path`, the data plane runs under cProfile (slower: its figures are marked as profiled)
    and writes the profile there when it exits on SIGTERM."""
    port = free_port(HOST)
    target = Target("ours", port)
    redis_server = start_redis(workdir / "redis")
    target.services.append(redis_server.service)
    pin_running(redis_server.service.pid, plan.load_core)
    write_proxy(redis_server, ProxyTarget(hostname=BENCH_HOST, target_url=f"http://{HOST}:{backend_port}"))
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "REDIS_PASSWORD": redis_server.password,
        "BIND_HOST": HOST,
        "HTTP_PORT": str(port),
        # The listeners we do not measure still bind: keep them on free loopback ports.
        "HTTPS_PORT": str(free_port(HOST)),
        "PROXY_PROTOCOL_PORT": str(free_port(HOST)),
        "INTERNAL_HOST": HOST,
        "INTERNAL_PORT": str(free_port(HOST)),
        "MHP_ENV_FILE": os.devnull,
        "LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "data_plane"]
    if profile_path is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile_path), "-m", "data_plane"]
    service = ServiceProcess(
        name="data plane",
        argv=pinned(argv, plan.proxy_core),
        log_path=workdir / "data-plane.out",
        ready=lambda: port_open(HOST, port),
        env=env,
        cwd=REPO_ROOT,
    )
    target.measured = service
    target.services.append(service)
    service.start()
    return target


def profile_summary(profile_path: Path, top: int = 40) -> str:
    """The hottest functions of a cProfile dump, by own time and by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(profile_path), stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    return out.getvalue()
