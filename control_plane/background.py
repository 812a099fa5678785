"""Loops the control plane runs for its lifespan (controllers, reconcilers), with one last-resort handler.

Each loop repeats a step. An unexpected error in a step (Redis or the engine away, a bug) is logged with its
traceback and the loop pauses before trying again, growing the pause up to a minute, so the app never dies
and never spins. Stopping asks the loops to finish (steps pause through `pause`, which wakes on stop) and
cancels what still runs after a grace period; work cut off that way is left pending in its stream and taken
over by another replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_ERROR_PAUSE_SECONDS = 60.0
# Longer than one blocking XREADGROUP (stream_consumer's block_seconds), so an idle consumer stops by itself.
STOP_GRACE_SECONDS = 3.0

Step = Callable[[], Awaitable[None]]


class BackgroundLoops:
    def __init__(self, *, expected: tuple[type[Exception], ...] = ()) -> None:
        # Errors that are a known condition (the Docker engine is away), logged in one line, no traceback.
        self._expected = expected
        self._steps: dict[str, Step] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def add(self, name: str, step: Step) -> None:
        self._steps[name] = step

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(name, step), name=name) for name, step in self._steps.items()
        ]

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the loops are asked to stop."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        self.stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            _done, stuck = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
            for task in stuck:
                log.error("background task %s did not stop; abandoning it", task.get_name())
        self._tasks = []

    async def _loop(self, name: str, step: Step) -> None:
        pause = 1.0
        while not self.stopping.is_set():
            try:
                await step()
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except self._expected as exc:
                log.warning("%s: %s; retrying in %.0fs", name, exc, pause)
                await self.pause(pause)
                pause = min(pause * 2, MAX_ERROR_PAUSE_SECONDS)
            except Exception:
                log.exception("%s failed; retrying in %.0fs", name, pause)
                await self.pause(pause)
                pause = min(pause * 2, MAX_ERROR_PAUSE_SECONDS)
