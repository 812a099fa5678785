"""What one wrk run asks of a target: which payload, over plain HTTP or TLS, and whether every request opens
a new connection (then a TLS workload measures full handshakes per second, the cost a proxy pays for each new
client; wrk does not resume TLS sessions).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bench.peer_configs import PAYLOADS, Payload


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    payload: Payload
    tls: bool = False
    new_connection_per_request: bool = False

    @property
    def description(self) -> str:
        transport = "TLS" if self.tls else "HTTP"
        reuse = (
            "a new connection (and handshake) per request"
            if self.new_connection_per_request
            else "keep-alive"
        )
        return f"GET {self.payload.size_bytes} bytes over {transport}, {reuse}"


TLS_WORKLOADS = (
    Workload("tls-small", PAYLOADS["small"], tls=True),
    Workload("tls-handshake", PAYLOADS["small"], tls=True, new_connection_per_request=True),
)


def plan_workloads(sizes: list[str], *, tls: bool) -> list[Workload]:
    plain = [Workload(size, PAYLOADS[size]) for size in sizes]
    return plain + (list(TLS_WORKLOADS) if tls else [])
