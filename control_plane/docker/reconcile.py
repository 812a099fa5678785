"""The controller's decisions as a pure function: desired state + what the engine shows -> steps.

`decide` is level-triggered: it looks at the whole picture each time, so a lost, repeated or reordered
event changes nothing (the next look fixes it). Rules:
- a container of this deployment whose service has no record is an orphan: removed;
- containers of an older generation are removed before a new one is created (they may hold its ports);
  two of the current generation (which the deterministic name prevents, but an engine restored from a
  backup could show) are reduced to one;
- desired running and no container: create and start one, unless the engine refused this very attempt
  (ServiceRecord.attempt_key) already: a failure waits for a change, a start or a restart request;
- a container that exists but is not running is started only when it was never started or someone asked
  for a start or restart since; a container that stopped by itself stays stopped (its restart policy, which
  the engine applies, had the say);
- desired stopped: a running container is stopped (kept, so its logs remain).

`observed_state` turns what the engine shows into the state the API reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from .container_config import generation_of
from .engine import ContainerInfo
from .spec import ObservedState, ServiceRecord, ServiceStatus


@dataclass(frozen=True, slots=True)
class Remove:
    container_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CreateAndStart:
    pass


@dataclass(frozen=True, slots=True)
class Start:
    container_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    container_id: str


@dataclass(frozen=True, slots=True)
class Restart:
    container_id: str


Step = Remove | CreateAndStart | Start | Stop | Restart


def current_container(record: ServiceRecord, containers: list[ContainerInfo]) -> ContainerInfo | None:
    """The container made for the record's generation (the oldest by id if, abnormally, there are two)."""
    mine = sorted((c for c in containers if generation_of(c) == record.generation), key=lambda c: c.id)
    return mine[0] if mine else None


def decide(
    record: ServiceRecord | None, status: ServiceStatus | None, containers: list[ContainerInfo]
) -> list[Step]:
    if record is None:
        return [Remove(c.id, "its service no longer exists") for c in containers]
    keep = current_container(record, containers)
    steps: list[Step] = []
    for container in containers:
        if keep is not None and container.id == keep.id:
            continue
        if generation_of(container) == record.generation:
            steps.append(Remove(container.id, f"a duplicate of generation {record.generation}"))
        else:
            steps.append(
                Remove(container.id, f"generation {generation_of(container)} replaced by {record.generation}")
            )
    failed = status is not None and status.failed_attempt == record.attempt_key
    if record.desired_state == "stopped":
        if keep is not None and (keep.running or keep.status == "restarting"):
            steps.append(Stop(keep.id))
        return steps
    if keep is None:
        if not failed:
            steps.append(CreateAndStart())
        return steps
    start_due = record.start_seq > (status.start_seq_done if status else 0)
    restart_due = record.restart_seq > (status.restart_seq_done if status else 0)
    if keep.status == "created":
        if not failed:
            steps.append(Start(keep.id))
    elif not keep.running and keep.status != "restarting":
        if start_due or restart_due:
            steps.append(Start(keep.id))
    elif restart_due:
        steps.append(Restart(keep.id))
    return steps


def observed_state(record: ServiceRecord, info: ContainerInfo | None, *, failed: bool) -> ObservedState:
    if failed:
        return "failed"
    if info is None:
        return "stopped" if record.desired_state == "stopped" else "pending"
    if info.status == "running":
        return "unhealthy" if info.health == "unhealthy" else "running"
    if info.status == "restarting":
        return "restarting"
    if info.oom_killed:
        return "oom_killed"
    if info.status == "created":
        return "stopped" if record.desired_state == "stopped" else "creating"
    if record.desired_state == "stopped":
        return "stopped"
    return "exited"
