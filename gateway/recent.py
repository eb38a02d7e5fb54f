"""An answer made at most once per short period, and shared by every caller in that period.

For what the gateway answers by asking every service (readiness, the API description): however
many callers ask, the services are asked at most once per `max_age`, and callers that arrive
while the answer is being made wait for that one instead of asking again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    def __init__(
        self,
        make: Callable[[], Awaitable[T]],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make = make
        self._max_age = max_age
        self._clock = clock
        self._latest: asyncio.Task[T] | None = None
        self._made_at = 0.0

    async def get(self) -> T:
        """The latest answer while it is younger than `max_age` (or still being made), else a
        new one. A failure is an answer too: it is shared the same way, not retried at once."""
        latest = self._latest
        if latest is None or (latest.done() and self._clock() - self._made_at >= self._max_age):
            latest = self._latest = asyncio.create_task(self._make())
            latest.add_done_callback(self._made)
        # A caller that goes away (its client hung up) leaves the answer to the others.
        return await asyncio.shield(latest)

    def _made(self, task: asyncio.Task[T]) -> None:
        self._made_at = self._clock()
        if not task.cancelled():
            task.exception()  # retrieved here, so that no caller left means no warning
