"""The pause before trying again something that a dependency's outage makes fail (a connection
to Postgres or RabbitMQ): it doubles with each failure in a row, up to a most, and starts again
from the first after a success. Written once for every loop that reconnects."""

import asyncio


class Backoff:
    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self._first = first
        self._most = most
        self._next = first

    @property
    def next_pause(self) -> float:
        return self._next

    def succeeded(self) -> None:
        self._next = self._first

    async def pause(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._most)
