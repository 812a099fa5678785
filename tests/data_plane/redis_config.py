"""Write routing config to Redis exactly as the control plane does (shared semantics), for data-plane tests.

One MULTI/EXEC writes the objects, INCRs the config version and XADDs a ChangeEvent carrying the new version
(WATCH on the version makes "new version" known before EXEC); then PUBLISH names the version.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from shared import keys
from shared.models import ChangeEvent, ProxyTarget, Route


def write_config(
    client: redis.Redis,
    *,
    proxies: Iterable[ProxyTarget] = (),
    routes: Iterable[Route] = (),
    delete_proxies: Iterable[str] = (),
    delete_routes: Iterable[str] = (),
    raw_proxies: dict[str, str] | None = None,
    publish: bool = True,
) -> int:
    proxies, routes = list(proxies), list(routes)
    delete_proxies, delete_routes = list(delete_proxies), list(delete_routes)
    # One event per changed object, as the control plane's store writes them: a data plane applies
    # changes piecewise from these, so an object without its event would never reach it.
    changed = [("proxy", p.hostname) for p in proxies]
    changed += [("proxy", hostname) for hostname in (*(raw_proxies or {}), *delete_proxies)]
    changed += [("route", r.id) for r in routes] + [("route", route_id) for route_id in delete_routes]
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.config_version())
                version = int(pipe.get(keys.config_version()) or 0) + 1
                pipe.multi()
                for proxy in proxies:
                    pipe.hset(keys.proxies(), proxy.hostname, proxy.model_dump_json())
                for hostname, raw in (raw_proxies or {}).items():
                    pipe.hset(keys.proxies(), hostname, raw)
                for route in routes:
                    pipe.hset(keys.routes(), route.id, route.model_dump_json())
                for hostname in delete_proxies:
                    pipe.hdel(keys.proxies(), hostname)
                for route_id in delete_routes:
                    pipe.hdel(keys.routes(), route_id)
                pipe.incr(keys.config_version())
                for kind, name in changed:
                    event = ChangeEvent(version=version, kind=kind, action="updated", name=name)  # type: ignore[arg-type]
                    pipe.xadd(keys.changes_stream(), event.to_stream_fields(), maxlen=10000, approximate=True)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if publish:
        client.publish(keys.changes_channel(), str(version))
    return version
