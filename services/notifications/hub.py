"""Pushes new notifications to the streams connected to this instance.

Notifications are written by whichever instance consumed the event; each instance learns of
every new one through Postgres LISTEN/NOTIFY (sent at commit), and hands it to the streams of
its own connected users. The streams are the only per-process state: what they show is already
in Postgres.
"""

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from services.notifications.queries import NEW_NOTIFICATION_CHANNEL
from shopkit.settings import ServiceSettings

log = logging.getLogger("services.notifications.hub")


class Hub:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._streams: dict[UUID, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: UUID) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._streams[user_id].add(queue)
        try:
            yield queue
        finally:
            self._streams[user_id].discard(queue)
            if not self._streams[user_id]:
                del self._streams[user_id]

    @property
    def connected(self) -> int:
        return sum(len(queues) for queues in self._streams.values())

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message = orjson.loads(payload)
        for queue in self._streams.get(UUID(message["userId"]), ()):
            with contextlib.suppress(asyncio.QueueFull):  # a stuck client loses pushes only
                queue.put_nowait(message["notification"])

    async def run(self) -> None:
        """Listens until cancelled, reconnecting after Postgres restarts."""
        delay = 0.2
        while True:
            try:
                await self._listen_until_lost()
                delay = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notification listener down: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen_until_lost(self) -> None:
        conn = await asyncpg.connect(
            self._settings.database_url.get_secret_value(),
            timeout=self._settings.db_connect_timeout_seconds,
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(NEW_NOTIFICATION_CHANNEL, self._on_notify)
            await lost.wait()
        finally:
            if not conn.is_closed():
                await conn.close()
