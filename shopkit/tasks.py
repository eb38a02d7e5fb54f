"""Background loops tied to an app's life: started with it, cancelled (or given time to finish)
when it shuts down."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("shopkit.tasks")


def background(
    name: str, start: Callable[[web.Application], Awaitable[object]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running `start(app)` for the app's lifetime, cancelled at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(start(app), name=name)
        yield
        await finish_or_cancel(task, within=0)

    return ctx


async def finish_or_cancel(task: asyncio.Task[Any], within: float) -> None:
    """Gives `task` up to `within` seconds to return, then cancels it."""
    if within > 0:
        await asyncio.wait({task}, timeout=within)
    task.cancel()  # a no-op once it returned
    with contextlib.suppress(asyncio.CancelledError):
        await task


def periodic(
    name: str, interval: float, job: Callable[[web.Application], Awaitable[object]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running `job` every `interval` seconds; a failed run is logged and the
    loop goes on, so an outage of a dependency only skips runs until it is back."""

    async def loop(app: web.Application) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job(app)
            except Exception:
                log.warning("periodic job failed", extra={"job": name}, exc_info=True)

    return background(name, loop)
