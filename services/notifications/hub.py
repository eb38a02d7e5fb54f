"""Pushes new notifications to the streams connected to this instance, and ends streams that
must end.

Notifications are written by whichever instance consumed the event; each instance learns of
every new one through Postgres LISTEN/NOTIFY (sent at commit), and hands it to the streams of
its own connected users. The streams are the only per-process state: what they show is already
in Postgres. A stream ends when its session is revoked (announced the same way), and every
stream ends when the listener lost its connection, since pushes may have been missed meanwhile:
clients reconnect and catch up with the list.
"""

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from services.notifications.queries import NEW_NOTIFICATION_CHANNEL, SESSIONS_REVOKED_CHANNEL
from services.notifications.views import notification_view
from shopkit import db
from shopkit.settings import ServiceSettings

log = logging.getLogger("services.notifications.hub")

END = None  # what a stream's queue receives when the stream must end


@dataclass(eq=False)
class Stream:
    session_id: UUID | None
    pushes: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000)
    )

    def push(self, item: dict[str, Any] | None) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stuck client loses pushes only
            self.pushes.put_nowait(item)


class Hub:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._streams: dict[UUID, set[Stream]] = defaultdict(set)

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: UUID, session_id: UUID | None) -> AsyncIterator[Stream]:
        stream = Stream(session_id)
        self._streams[user_id].add(stream)
        try:
            yield stream
        finally:
            self._streams[user_id].discard(stream)
            if not self._streams[user_id]:
                del self._streams[user_id]

    @property
    def connected(self) -> int:
        return sum(len(streams) for streams in self._streams.values())

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        row = orjson.loads(payload)  # the new row, as queries.add sends it
        streams = self._streams.get(UUID(row["user_id"]), ())
        if streams:
            view = notification_view(row).model_dump(mode="json", by_alias=True)
            for stream in streams:
                stream.push(view)

    def _on_revoked(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message = orjson.loads(payload)
        revoked = {UUID(s) for s in message["sessionIds"]}
        for stream in self._streams.get(UUID(message["userId"]), ()):
            if stream.session_id in revoked:
                stream.push(END)

    def _end_all(self) -> None:
        for streams in self._streams.values():
            for stream in streams:
                stream.push(END)

    async def run(self) -> None:
        """Listens until cancelled, reconnecting after Postgres restarts."""
        delay = 0.2
        while True:
            try:
                await self._listen_until_lost()
                delay = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notification listener down: %s", type(exc).__name__)
            self._end_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen_until_lost(self) -> None:
        conn = await db.connect(self._settings, "notifications")
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(NEW_NOTIFICATION_CHANNEL, self._on_notification)
            await conn.add_listener(SESSIONS_REVOKED_CHANNEL, self._on_revoked)
            await lost.wait()
        finally:
            if not conn.is_closed():
                await conn.close()
