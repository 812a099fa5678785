"""What is stored about a Docker-managed service: the desired state (ServiceRecord with its ServiceSpec) and
the observed state (ServiceStatus). Control-plane models: the data plane never reads them (it reads the
ServiceEndpoint in shared.models that the controller derives from them).

The stored spec is explicit: defaults that depend on settings (network, memory limit, process limit) are
filled in when the service is created, host ports are the allocated ones, and secret environment values are
ciphertext (shared.encryption, context `service-env:<service>:<variable>`). `generation` grows with every
change of the spec; a container carries the generation it was made for as a label, which is what makes the
controller idempotent (a retried event finds the container of this generation and creates nothing).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import parse_byte_size
from shared.models import ADMIN_OWNER, SERVICE_NAME_PATTERN, now_seconds

PORT_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
NETWORK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
RESTART_POLICY_PATTERN = r"^(no|always|unless-stopped|on-failure(:[0-9]{1,4})?)$"
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$"
RESERVED_LABEL_PREFIX = "mhp."
MAX_PORTS = 20
MAX_ENV = 200
MAX_LABELS = 50
# The names of services that a URL segment would confuse with the external-services collection.
RESERVED_SERVICE_NAMES = frozenset({"external"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServicePort(Strict):
    """One port of a service. With network_mode host the container listens on the host port itself, so
    container_port is the host port; on a named network the container port is published on bind:host_port."""

    name: Annotated[str, Field(pattern=PORT_NAME_PATTERN)] = "http"
    container_port: int | None = Field(default=None, ge=1, le=65535)
    host_port: int | None = Field(default=None, ge=1, le=65535, description="allocated when omitted")
    bind: Literal["127.0.0.1", "0.0.0.0"] = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"


class Healthcheck(Strict):
    test: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=64)] = Field(
        description='["CMD", "prog", "arg"...] or ["CMD-SHELL", "shell command"] or ["NONE"]'
    )
    interval_seconds: float = Field(default=30.0, ge=1, le=86400)
    timeout_seconds: float = Field(default=30.0, ge=1, le=86400)
    retries: int = Field(default=3, ge=1, le=100)
    start_period_seconds: float = Field(default=0.0, ge=0, le=86400)

    @field_validator("test")
    @classmethod
    def _test(cls, value: list[str]) -> list[str]:
        if value[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ValueError('the first item of a healthcheck test is "CMD", "CMD-SHELL" or "NONE"')
        return value


class BuildSpec(Strict):
    context: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="directory under the build root (relative paths are resolved against it)"
    )
    dockerfile: Annotated[str, Field(min_length=1, max_length=1024)] = "Dockerfile"
    args: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], Annotated[str, Field(max_length=4096)]] = (
        Field(default_factory=dict)
    )


class EnvValue(Strict):
    """A stored environment value; `secret` ones hold ciphertext, never the value."""

    value: Annotated[str, Field(max_length=65536)]
    secret: bool = False


class ServiceSpec(Strict):
    """The container a service should run (every field explicit once stored)."""

    image: Annotated[str, Field(max_length=512)] | None = None
    build: BuildSpec | None = None
    pull: Literal["missing", "always", "never"] = "missing"
    command: Annotated[list[Annotated[str, Field(max_length=65536)]], Field(max_length=256)] | None = None
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], EnvValue] = Field(default_factory=dict)
    labels: dict[
        Annotated[str, Field(min_length=1, max_length=256)], Annotated[str, Field(max_length=1024)]
    ] = Field(default_factory=dict)
    memory_limit: str = "512m"
    cpu_limit: float | None = Field(default=None, gt=0, le=1024)
    pids_limit: int = Field(default=512, ge=16, le=1_000_000)
    restart_policy: Annotated[str, Field(pattern=RESTART_POLICY_PATTERN)] = "unless-stopped"
    healthcheck: Healthcheck | None = None
    read_only_root: bool = True
    user: Annotated[str, Field(pattern=USER_PATTERN)] | None = None
    cap_drop: list[Annotated[str, Field(pattern=r"^[A-Za-z_]{1,64}$")]] = Field(
        default_factory=lambda: ["ALL"]
    )
    cap_add: list[Annotated[str, Field(pattern=r"^[A-Za-z_]{1,64}$")]] = Field(default_factory=list)
    network_mode: Annotated[str, Field(pattern=NETWORK_PATTERN)] = "host"
    ports: Annotated[list[ServicePort], Field(max_length=MAX_PORTS)] = Field(default_factory=list)

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        parse_byte_size(value)
        return value.strip().lower()

    @field_validator("cap_drop", "cap_add")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for name in value:
            upper = name.upper().removeprefix("CAP_")
            if upper not in out:
                out.append(upper)
        return out

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key in value:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(
                    f"label {key!r}: labels starting with {RESERVED_LABEL_PREFIX!r} are the proxy's"
                )
        return value

    @field_validator("environment")
    @classmethod
    def _environment_size(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        if len(value) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} environment variables")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        if (self.image is None) == (self.build is None):
            raise ValueError("exactly one of image and build must be given")
        if self.image is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*", self.image):
            raise ValueError(f"image {self.image!r} is not an image reference")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError("port names must be unique")
        if self.ports and self.network_mode == "none":
            raise ValueError("a service with network_mode none has no ports")
        for port in self.ports:
            if self.network_mode == "host":
                if (
                    None not in (port.container_port, port.host_port)
                    and port.container_port != port.host_port
                ):
                    raise ValueError(
                        f"port {port.name!r}: on the host network the container listens on the host port "
                        "itself, so container_port must equal host_port (or be left out)"
                    )
            elif port.container_port is None:
                raise ValueError(
                    f"port {port.name!r}: container_port is required on network {self.network_mode!r}"
                )
        return self

    @property
    def memory_limit_bytes(self) -> int:
        return parse_byte_size(self.memory_limit)

    def endpoint_port(self) -> ServicePort | None:
        """The port `service://NAME` reaches: the first TCP port."""
        return next((p for p in self.ports if p.protocol == "tcp"), None)


DesiredState = Literal["running", "stopped"]


class ServiceRecord(Strict):
    """Desired state of one service ({mhp}:services). start_seq / restart_seq count start and restart
    requests; the controller records the last one it carried out in ServiceStatus, so each is done once."""

    schema_version: int = 1
    name: Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)]
    owner: str = ADMIN_OWNER
    spec: ServiceSpec
    generation: int = Field(default=1, ge=1)
    desired_state: DesiredState = "running"
    start_seq: int = 0
    restart_seq: int = 0
    auto_proxy: str | None = None  # hostname of the proxy created with the service
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)

    @property
    def attempt_key(self) -> str:
        """What a failure is remembered against: a new generation, start or restart is a new attempt."""
        return f"{self.generation}:{self.start_seq}:{self.restart_seq}"


ObservedState = Literal[
    "pending",
    "pulling",
    "building",
    "creating",
    "running",
    "unhealthy",
    "restarting",
    "stopped",
    "exited",
    "oom_killed",
    "failed",
]


class ServiceStatus(Strict):
    """Observed state of one service ({mhp}:service-status), written only by the controller."""

    schema_version: int = 1
    name: str
    state: ObservedState = "pending"
    error: str = ""  # the engine's message when failed
    generation: int = 0  # generation of the container observed (0: none yet)
    # The attempt (ServiceRecord.attempt_key) whose image, create or start the engine refused: not retried
    # until the spec changes or someone asks for a start or restart.
    failed_attempt: str = ""
    container_id: str = ""
    container_name: str = ""
    image: str = ""  # the reference the container runs (a build's content-addressed tag)
    exit_code: int | None = None
    oom_killed: bool = False
    last_oom_at: float | None = None
    restart_count: int = 0  # restarts by the restart policy of the current container
    health: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    start_seq_done: int = 0
    restart_seq_done: int = 0
    updated_at: float = Field(default_factory=now_seconds)
