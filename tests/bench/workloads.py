"""What one wrk run asks of a target: which payload, over plain HTTP or TLS, and whether every request opens
a new connection (then a TLS workload measures full handshakes per second, the cost a proxy pays for each new
client; wrk does not resume TLS sessions).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bench.peer_configs import BENCH_HOST, PAYLOADS, PROTECTED_HOST, Payload


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    payload: Payload
    tls: bool = False
    new_connection_per_request: bool = False
    host: str = BENCH_HOST
    # Sent with the target's own valid access token, to its protected proxy (only ours has one).
    protected: bool = False

    @property
    def description(self) -> str:
        transport = "TLS" if self.tls else "HTTP"
        reuse = (
            "a new connection (and handshake) per request"
            if self.new_connection_per_request
            else "keep-alive"
        )
        protected = ", OAuth-protected proxy, valid JWT" if self.protected else ""
        return f"GET {self.payload.size_bytes} bytes over {transport}, {reuse}{protected}"


TLS_WORKLOADS = (
    Workload("tls-small", PAYLOADS["small"], tls=True),
    Workload("tls-handshake", PAYLOADS["small"], tls=True, new_connection_per_request=True),
)


# The same small GET to a protected proxy: compared with the same proxy unprotected (`small`).
PROTECTED_WORKLOAD = Workload("protected", PAYLOADS["small"], host=PROTECTED_HOST, protected=True)


def plan_workloads(sizes: list[str], *, tls: bool) -> list[Workload]:
    plain = [Workload(size, PAYLOADS[size]) for size in sizes]
    protected = [PROTECTED_WORKLOAD] if "small" in sizes else []
    return plain + protected + (list(TLS_WORKLOADS) if tls else [])
