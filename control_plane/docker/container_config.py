"""A service's desired state as the engine's container configuration, and the address a running container is
reached at. Pure functions of stored data; no engine calls.

Every container carries labels naming the deployment, the service, its generation and owner, so that the
controller finds its own containers (and only those: two deployments may share an engine) and recognises
the one made for the current generation. Defaults favour safety: no swap (the memory limit is the limit,
and exceeding it is an OOM kill), no new privileges, capabilities dropped, a read-only root with a small
/tmp, a process limit, an init process, rotated logs.
"""

from __future__ import annotations

from typing import Any

from shared.models import ADMIN_OWNER

from .engine import ContainerInfo
from .spec import ServicePort, ServiceRecord

LABEL_DEPLOYMENT = "mhp.deployment"
LABEL_SERVICE = "mhp.service"
LABEL_GENERATION = "mhp.generation"
LABEL_OWNER = "mhp.owner"
TMPFS_OPTIONS = "rw,nosuid,nodev,size=64m"
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}
NANOS = 1_000_000_000


def container_name(deployment: str, service: str, generation: int) -> str:
    """Deterministic per (deployment, service, generation): creating it twice is a name conflict, never a
    second container."""
    return f"mhp-{deployment[:12]}-{service}-g{generation}"


def our_labels(deployment: str, service: str | None = None) -> dict[str, str]:
    labels = {LABEL_DEPLOYMENT: deployment}
    if service is not None:
        labels[LABEL_SERVICE] = service
    return labels


def generation_of(info: ContainerInfo) -> int:
    try:
        return int(info.labels.get(LABEL_GENERATION, "0"))
    except ValueError:
        return 0


def port_environment(ports: list[ServicePort]) -> dict[str, str]:
    """PORT (the first port) and PORT_<NAME> for every port: what the container should listen on."""
    env: dict[str, str] = {}
    for port in ports:
        listen = port.container_port or port.host_port
        if listen is None:
            continue
        env.setdefault("PORT", str(listen))
        env[f"PORT_{port.name.upper().replace('-', '_')}"] = str(listen)
    return env


def _restart_policy(text: str) -> dict[str, Any]:
    name, _, retries = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(retries or 0)}


def container_config(
    record: ServiceRecord,
    *,
    image: str,
    environment: dict[str, str],
    deployment: str,
    stop_timeout_seconds: int,
) -> dict[str, Any]:
    """The body of POST /containers/create for the record's current generation. `environment` holds the
    plaintext values (secrets decrypted by the caller)."""
    spec = record.spec
    env = {**port_environment(spec.ports), **environment}
    labels = {
        **spec.labels,
        LABEL_DEPLOYMENT: deployment,
        LABEL_SERVICE: record.name,
        LABEL_GENERATION: str(record.generation),
        LABEL_OWNER: record.owner or ADMIN_OWNER,
    }
    memory = spec.memory_limit_bytes
    host: dict[str, Any] = {
        "NetworkMode": spec.network_mode,
        "Memory": memory,
        "MemorySwap": memory,
        "PidsLimit": spec.pids_limit,
        "ReadonlyRootfs": spec.read_only_root,
        "CapDrop": list(spec.cap_drop),
        "CapAdd": list(spec.cap_add),
        "SecurityOpt": ["no-new-privileges"],
        "RestartPolicy": _restart_policy(spec.restart_policy),
        "Init": True,
        "LogConfig": {"Type": "json-file", "Config": dict(LOG_OPTIONS)},
    }
    if spec.cpu_limit is not None:
        host["NanoCpus"] = int(spec.cpu_limit * NANOS)
    if spec.read_only_root:
        host["Tmpfs"] = {"/tmp": TMPFS_OPTIONS}
    config: dict[str, Any] = {
        "Image": image,
        "Env": [f"{key}={value}" for key, value in sorted(env.items())],
        "Labels": labels,
        "StopTimeout": stop_timeout_seconds,
        "HostConfig": host,
    }
    if spec.command is not None:
        config["Cmd"] = list(spec.command)
    if spec.user is not None:
        config["User"] = spec.user
    if spec.healthcheck is not None:
        check = spec.healthcheck
        config["Healthcheck"] = {
            "Test": list(check.test),
            "Interval": int(check.interval_seconds * NANOS),
            "Timeout": int(check.timeout_seconds * NANOS),
            "Retries": check.retries,
            "StartPeriod": int(check.start_period_seconds * NANOS),
        }
    if spec.network_mode not in ("host", "none") and spec.ports:
        # On a named network the container port is published on the allocated host port, on the chosen bind.
        config["ExposedPorts"] = {f"{p.container_port}/{p.protocol}": {} for p in spec.ports}
        host["PortBindings"] = {
            f"{p.container_port}/{p.protocol}": [{"HostIp": p.bind, "HostPort": str(p.host_port)}]
            for p in spec.ports
        }
    return config


def endpoint_url(record: ServiceRecord, info: ContainerInfo | None, *, service_host: str) -> str | None:
    """Where `service://NAME` reaches a running container: on the host network the allocated host port at
    DOCKER_SERVICE_HOST; on a named network the container's own address there (it changes when the container
    is recreated). None when the service has no TCP port, or its address is not known yet."""
    port = record.spec.endpoint_port()
    if port is None:
        return None
    if record.spec.network_mode == "host":
        host = f"[{service_host}]" if ":" in service_host else service_host
        return f"http://{host}:{port.host_port}" if port.host_port else None
    if info is None:
        return None
    address = info.addresses.get(record.spec.network_mode)
    if not address:
        return None
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port.container_port}"
