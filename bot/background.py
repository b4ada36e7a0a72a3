"""Work that goes on after Slack has its answer: tasks held until they end, drained when the process stops.

asyncio keeps only a weak reference to a task, so a task nobody holds can vanish mid-flight; and a process that
stops should let a readiness check or a card update finish rather than drop it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException], Awaitable[object]]


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def keep(self, task: asyncio.Task[object], on_error: ErrorHandler) -> None:
        """Hold `task` until it ends; a failure goes to `on_error` (itself held until it has run)."""
        self._tasks.add(task)

        def ended(done: asyncio.Task[object]) -> None:
            self._tasks.discard(done)
            if done.cancelled() or done.exception() is None:
                return
            report = asyncio.ensure_future(_report(on_error, done.exception()))  # type: ignore[arg-type]
            self._tasks.add(report)
            report.add_done_callback(self._tasks.discard)

        task.add_done_callback(ended)

    async def settled(self, seconds: float) -> None:
        """Wait up to `seconds` for the work under way, and any it starts, cancelling nothing (the console prints a
        check's answer once it is there)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for the work under way, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("stopped with %d background task(s) unfinished", len(pending))
            await asyncio.wait(pending, timeout=1)


async def _report(on_error: ErrorHandler, error: BaseException) -> None:
    try:
        await on_error(error)
    except Exception:  # the error handler itself failed: the log is all that is left
        log.exception("could not report a background failure")
