"""One stats sample of the engine reduced to what `mhp service stats` shows, computed the way the docker CLI
computes it (CPU % over the sample's interval times online CPUs; memory without the page cache). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StatsSummary:
    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def summarize(raw: dict[str, Any]) -> StatsSummary:
    cpu = raw.get("cpu_stats") or {}
    previous = raw.get("precpu_stats") or {}
    cpu_delta = _int((cpu.get("cpu_usage") or {}).get("total_usage")) - _int(
        (previous.get("cpu_usage") or {}).get("total_usage")
    )
    system_delta = _int(cpu.get("system_cpu_usage")) - _int(previous.get("system_cpu_usage"))
    cpus = _int(cpu.get("online_cpus")) or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * cpus * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0

    memory = raw.get("memory_stats") or {}
    usage = _int(memory.get("usage"))
    details = memory.get("stats") or {}
    cache = _int(details.get("total_inactive_file", details.get("inactive_file")))
    used = usage - cache if 0 < cache < usage else usage
    limit = _int(memory.get("limit"))

    networks = (raw.get("networks") or {}).values()
    block = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []

    def block_bytes(op: str) -> int:
        return sum(_int(entry.get("value")) for entry in block if str(entry.get("op", "")).lower() == op)

    return StatsSummary(
        cpu_percent=round(cpu_percent, 2),
        memory_used_bytes=used,
        memory_limit_bytes=limit,
        memory_percent=round(used / limit * 100.0, 2) if limit else 0.0,
        network_rx_bytes=sum(_int(n.get("rx_bytes")) for n in networks),
        network_tx_bytes=sum(_int(n.get("tx_bytes")) for n in networks),
        block_read_bytes=block_bytes("read"),
        block_write_bytes=block_bytes("write"),
        pids=_int((raw.get("pids_stats") or {}).get("current")),
    )
