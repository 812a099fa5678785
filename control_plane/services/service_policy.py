"""What an ordinary token may run, and the defaults every service gets: the tenancy rules of services.

The admin may run anything except a build outside DOCKER_BUILD_ROOT. An ordinary token:
- runs images of DOCKER_IMAGE_ALLOWLIST only (or images it builds), and builds only under
  DOCKER_BUILD_ROOT/<its name>/ (403);
- attaches services to `none`, to networks of DOCKER_TENANT_NETWORKS, or to `host` with the host-network
  grant (403): a container on the host network could listen on any address and port, including a port
  another tenant's service was given;
- binds ports on 0.0.0.0 (reachable without going through the proxy) only with the public-ports grant (403);
- stays within SERVICE_TENANT_MAX_MEMORY_LIMIT and SERVICE_TENANT_MAX_CPU_LIMIT (422) and adds back only
  the capabilities of SERVICE_TENANT_CAP_ADD (403).
Limits the engine itself refuses (a memory limit below its minimum, more CPUs than the host has) are left
to the engine: the service goes to `failed` with the engine's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings, parse_byte_size, split_csv
from shared.models import ADMIN_OWNER

from .. import store
from ..docker.images import (
    BuildContextOutside,
    BuildContextRefused,
    allowlist_refusal,
    build_base,
    resolve_context,
)
from ..docker.spec import ServiceSpec
from ..errors import Forbidden, InvalidInput
from ..principal import Principal
from ..store import Reader


async def token_grants(reader: Reader, principal: Principal) -> frozenset[str]:
    """What the admin granted the caller; the admin has every grant."""
    if principal.is_admin:
        return frozenset({"public-ports", "host-network"})
    token = await reader.get(store.tokens(), principal.name)
    return frozenset(token.grants) if token is not None else frozenset()


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", [{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    settings: Settings

    def check(self, principal: Principal, grants: frozenset[str], spec: ServiceSpec, *, owner: str) -> None:
        """Raise Forbidden (403) or InvalidInput (422) when `principal` may not run `spec` for the service's
        `owner` (the admin may change a tenant's service; its build context stays the owner's)."""
        self.check_build(owner, spec)
        if principal.is_admin:
            return
        settings = self.settings
        if spec.image is not None:
            refusal = allowlist_refusal(spec.image, settings.DOCKER_IMAGE_ALLOWLIST)
            if refusal is not None:
                raise Forbidden(refusal)
        network = spec.network_mode
        if network == "host" and "host-network" not in grants:
            raise Forbidden(
                "network_mode host is admin-only unless the admin grants it to this token "
                "(mhp tokens update NAME --grant host-network)"
            )
        if network not in ("host", "none") and network not in split_csv(settings.DOCKER_TENANT_NETWORKS):
            raise Forbidden(
                f"network {network!r} is not one the admin opened to tokens (DOCKER_TENANT_NETWORKS)"
            )
        for port in spec.ports:
            if port.bind == "0.0.0.0" and "public-ports" not in grants:
                raise Forbidden(
                    f"port {port.name!r}: binding on 0.0.0.0 (reachable without the proxy) is admin-only "
                    "unless the admin grants it to this token (mhp tokens update NAME --grant public-ports)"
                )
        if spec.memory_limit_bytes > parse_byte_size(settings.SERVICE_TENANT_MAX_MEMORY_LIMIT):
            raise _invalid(
                "memory_limit", f"at most {settings.SERVICE_TENANT_MAX_MEMORY_LIMIT} for ordinary tokens"
            )
        if spec.cpu_limit is not None and spec.cpu_limit > settings.SERVICE_TENANT_MAX_CPU_LIMIT:
            raise _invalid(
                "cpu_limit", f"at most {settings.SERVICE_TENANT_MAX_CPU_LIMIT} for ordinary tokens"
            )
        allowed_caps = {c.upper().removeprefix("CAP_") for c in split_csv(settings.SERVICE_TENANT_CAP_ADD)}
        extra = sorted(set(spec.cap_add) - allowed_caps)
        if extra:
            raise Forbidden(
                f"cap_add {', '.join(extra)}: ordinary tokens may add only {', '.join(sorted(allowed_caps))}"
            )

    def check_build(self, owner: str, spec: ServiceSpec) -> Path | None:
        """The build context directory, refused unless under the owner's part of the build root (the whole
        root for the admin's services): where the controller will look for it too."""
        if spec.build is None:
            return None
        try:
            base = build_base(self.settings.DOCKER_BUILD_ROOT, owner, is_admin=owner == ADMIN_OWNER)
            return resolve_context(base, spec.build.context, spec.build.dockerfile)
        except BuildContextOutside as exc:
            raise Forbidden(exc.detail) from exc
        except BuildContextRefused as exc:
            raise _invalid("build", exc.detail) from exc
