"""What clients send and see for Docker-managed services: the settable fields, the create body (with its
auto proxy), and the view (secret environment values never appear: only that they are set).

Environment values are plain strings or `{"secret": true, "value": "..."}`; a secret is stored encrypted with
the KEK (context `service-env:<service>:<variable>`). On update, `{"secret": true}` without a value keeps the
stored secret, so a client that never saw it can still send the rest of the spec back.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.models import SERVICE_NAME_PATTERN

from ..docker.spec import (
    ENV_NAME_PATTERN,
    MAX_PORTS,
    NETWORK_PATTERN,
    RESTART_POLICY_PATTERN,
    USER_PATTERN,
    BuildSpec,
    DesiredState,
    Healthcheck,
    ObservedState,
    ServicePort,
    ServiceRecord,
    ServiceStatus,
)
from .auth_config import ProxyAuthSettings, ProxyResourceSettings
from .proxies import ProxyTargetSettings


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: Literal[True]
    value: Annotated[str, Field(max_length=65536)] | None = Field(
        default=None, description="omit on update to keep the stored value"
    )


class SecretIsSet(BaseModel):
    """How a secret environment value is shown: it is set, and that is all."""

    secret: Literal[True] = True


EnvInput = Annotated[str, Field(max_length=65536)] | SecretValue


class ServiceSettings(BaseModel):
    """Every client-settable field of a service except its name (PUT replaces all of them)."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(
        default=None, description="image reference (local, or pulled from its registry)"
    )
    build: BuildSpec | None = Field(default=None, description="build from a Dockerfile under the build root")
    pull: Literal["missing", "always", "never"] = Field(
        default="missing", description="pull the image when it is missing (default), always, or never"
    )
    command: list[str] | None = Field(default=None, description="replaces the image's CMD (exec form)")
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], EnvInput] = Field(
        default_factory=dict, description='values, or {"secret": true, "value": ...} stored encrypted'
    )
    labels: dict[str, str] = Field(default_factory=dict, description="container labels (not mhp.*)")
    memory_limit: str | None = Field(
        default=None, description="e.g. 256m, 1g; default SERVICE_DEFAULT_MEMORY_LIMIT"
    )
    cpu_limit: float | None = Field(default=None, gt=0, le=1024, description="CPUs, e.g. 0.5")
    pids_limit: int | None = Field(
        default=None, ge=16, le=1_000_000, description="default SERVICE_DEFAULT_PIDS_LIMIT"
    )
    restart_policy: Annotated[str, Field(pattern=RESTART_POLICY_PATTERN)] = "unless-stopped"
    healthcheck: Healthcheck | None = None
    read_only_root: bool = Field(
        default=True, description="read-only root filesystem (a 64 MiB /tmp is writable)"
    )
    user: Annotated[str, Field(pattern=USER_PATTERN)] | None = None
    cap_drop: list[str] = Field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = Field(default_factory=list)
    network_mode: Annotated[str, Field(pattern=NETWORK_PATTERN)] | None = Field(
        default=None, description="host, none or a named network; default DOCKER_DEFAULT_NETWORK"
    )
    ports: Annotated[list[ServicePort], Field(max_length=MAX_PORTS)] = Field(default_factory=list)


class AutoProxy(ProxyTargetSettings):
    """The service's own proxy: any proxy setting; its target is always `service://<service name>`."""

    target_url: str = Field(default="", description="leave empty: the proxy targets service://NAME")
    hostname: str | None = Field(default=None, description="default NAME.BASE_DOMAIN")
    auth: ProxyAuthSettings | None = Field(default=None, description="protect the proxy with OAuth")
    resource: ProxyResourceSettings | None = Field(
        default=None, description="its Protected Resource Metadata"
    )

    @field_validator("target_url")
    @classmethod
    def _no_target(cls, value: str) -> str:
        if value:
            raise ValueError("an auto proxy always targets its service; leave target_url out")
        return value


class ServiceCreate(ServiceSettings):
    name: Annotated[str, Field(pattern=SERVICE_NAME_PATTERN, description="lower-case DNS label, unique")]
    auto_proxy: AutoProxy | None = Field(
        default=None, description="create the proxy NAME.BASE_DOMAIN with it"
    )
    start: bool = Field(default=True, description="run it now (false: created stopped)")


class PortView(BaseModel):
    name: str
    container_port: int | None
    host_port: int | None
    bind: str
    protocol: str


class StatusView(BaseModel):
    state: ObservedState
    error: str
    container_id: str
    container_name: str
    image: str
    generation: int
    exit_code: int | None
    oom_killed: bool
    last_oom_at: float | None
    restart_count: int
    health: str
    started_at: float | None
    finished_at: float | None
    updated_at: float | None

    @classmethod
    def of(cls, status: ServiceStatus | None) -> StatusView:
        data = (status or ServiceStatus(name="")).model_dump()
        data["updated_at"] = status.updated_at if status else None
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class ServiceView(BaseModel):
    """A service as the API shows it: its spec (secrets only as `{"secret": true}`), state and endpoint."""

    name: str
    owner: str
    image: str | None
    build: BuildSpec | None
    pull: str
    command: list[str] | None
    environment: dict[str, str | SecretIsSet]
    labels: dict[str, str]
    memory_limit: str
    cpu_limit: float | None
    pids_limit: int
    restart_policy: str
    healthcheck: Healthcheck | None
    read_only_root: bool
    user: str | None
    cap_drop: list[str]
    cap_add: list[str]
    network_mode: str
    ports: list[PortView]
    desired_state: DesiredState
    generation: int
    auto_proxy: str | None
    endpoint: str | None
    status: StatusView
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, record: ServiceRecord, status: ServiceStatus | None, endpoint: str | None) -> ServiceView:
        spec = record.spec
        return cls(
            **spec.model_dump(exclude={"environment", "ports"}),
            name=record.name,
            owner=record.owner,
            environment={k: SecretIsSet() if v.secret else v.value for k, v in spec.environment.items()},
            ports=[PortView(**p.model_dump()) for p in spec.ports],
            desired_state=record.desired_state,
            generation=record.generation,
            auto_proxy=record.auto_proxy,
            endpoint=endpoint,
            status=StatusView.of(status),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    def settings(self) -> dict[str, Any]:
        """This view as a ServiceSettings body (what PATCH merges into)."""
        data = self.model_dump(include=set(ServiceSettings.model_fields))
        data["environment"] = {
            k: {"secret": True} if isinstance(v, dict) else v for k, v in data["environment"].items()
        }
        return data


class ServiceStats(BaseModel):
    name: str
    state: ObservedState
    container_id: str
    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int
    restarts: int
    oom_killed: bool
