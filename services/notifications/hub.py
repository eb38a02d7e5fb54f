"""Pushes new notifications to the streams connected to this instance, and ends streams that
must end.

Notifications are written by whichever instance consumed the event; each instance learns of
every new one through Postgres LISTEN/NOTIFY (sent at commit), and hands it to the streams of
its own connected users. A notice names ids only (queries.NEW_NOTIFICATION_CHANNEL): the hub
reads the notification from its own table, for the user the notice names, so a notice that
another database role made up finds nothing and pushes nothing. A stream ends when its session
is revoked (announced the same way, the sessions read from `revoked_sessions`), and every
stream ends when the listener lost its connection, since pushes may have been missed meanwhile:
clients reconnect and catch up (Last-Event-ID). The streams are the only per-process state: what
they show is already in Postgres.
"""

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from services.notifications import queries
from services.notifications.settings import NotificationsSettings
from services.notifications.views import notification_view
from shopkit import db, errors
from shopkit.backoff import Backoff

log = logging.getLogger("services.notifications.hub")

NEW, REVOKED = "new", "revoked"
# Pushes a stream holds for a client that reads slower than they come; past it, the stream
# ends (and its client resumes from what it last got) rather than lose one.
PUSHES_HELD = 1000


class Push(NamedTuple):
    notification: dict[str, Any]  # as clients see it (views.Notification)
    traceparent: str | None  # of its creation, which its send joins (shopkit.tracing)


@dataclass(eq=False)
class Stream:
    session_id: UUID | None
    id: UUID = field(default_factory=uuid.uuid4)
    pushes: asyncio.Queue[Push] = field(
        default_factory=lambda: asyncio.Queue(maxsize=PUSHES_HELD)
    )
    # Set when the stream must end: its session was revoked, a push could not be held, or
    # pushes may have been missed.
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, notification: dict[str, Any], traceparent: str | None = None) -> None:
        try:
            self.pushes.put_nowait(Push(notification, traceparent))
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        self.ended.set()


@dataclass(frozen=True)
class Notice:
    kind: str  # NEW or REVOKED
    user_id: UUID
    row_id: UUID  # the notification, or the revocation event


class HubFull(errors.ServiceUnavailable):
    message = "This instance has as many event streams open as it serves; try again shortly."


class Hub:
    def __init__(self, settings: NotificationsSettings, ceiling: int) -> None:
        self._settings = settings
        # The connection the notices come on, while they do: the rows they name are read on
        # it too (a pool's turn for each would cost more than the read).
        self._listening: asyncpg.Connection | None = None
        self._ceiling = ceiling
        self._streams: dict[UUID, set[Stream]] = defaultdict(set)
        self._connected = 0
        self._notices: list[Notice] = []
        self._noticed = asyncio.Event()
        # This process's streams in `open_streams`, renewed under this id.
        self.instance_id = uuid.uuid4()

    @contextlib.asynccontextmanager
    async def subscribe(self, user_id: UUID, session_id: UUID | None) -> AsyncIterator[Stream]:
        """A stream of the user's, pushed to from now on; HubFull (503) past the ceiling."""
        if self._connected >= self._ceiling:
            raise HubFull()
        stream = Stream(session_id)
        self._streams[user_id].add(stream)
        self._connected += 1
        try:
            yield stream
        finally:
            self._connected -= 1
            self._streams[user_id].discard(stream)
            if not self._streams[user_id]:
                del self._streams[user_id]

    @property
    def connected(self) -> int:
        return self._connected

    @property
    def stream_ids(self) -> list[UUID]:
        return [stream.id for streams in self._streams.values() for stream in streams]

    def _on_notice(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.receive(channel, payload)

    def receive(self, channel: str, payload: str) -> None:
        """Notes a notice for a user with a stream here; the reading is `deliver`'s."""
        user, _, row = payload.partition(":")
        try:
            notice = Notice(NEW if channel == queries.NEW_NOTIFICATION_CHANNEL else REVOKED,
                            UUID(user), UUID(row))
        except ValueError:
            log.warning("unreadable notice ignored", extra={"channel": channel})
            return
        if notice.user_id in self._streams:
            self._notices.append(notice)
            self._noticed.set()

    async def deliver(self) -> None:
        """Reads what the notices name, in one round trip per kind for all the notices that
        came meanwhile, and hands it to the streams in the order the notices came."""
        while True:
            await self._noticed.wait()
            self._noticed.clear()
            notices, self._notices = self._notices, []
            try:
                await self._apply(notices)
            except Exception as exc:
                # Whatever went wrong (the database, too many connections...), what these
                # streams were told is unknown: they end, their clients resume. Delivery goes
                # on with the next notices.
                log.warning("notices unread: %s", type(exc).__name__)
                for user in {notice.user_id for notice in notices}:
                    for stream in self._streams.get(user, ()):
                        stream.end()

    async def _apply(self, notices: list[Notice]) -> None:
        new = [(n.user_id, n.row_id) for n in notices if n.kind == NEW]
        revoked = [(n.user_id, n.row_id) for n in notices if n.kind == REVOKED]
        conn = self._listening
        if conn is None:
            raise ConnectionError("not listening: the notices cannot be read")
        rows = {r["id"]: r for r in await queries.notifications_by_id(conn, new)} if new else {}
        ended = (
            {(r["user_id"], r["session_id"]) for r in await queries.revoked_sessions(
                conn, revoked)} if revoked else set()
        )
        for notice in notices:
            streams = self._streams.get(notice.user_id, ())
            if notice.kind == NEW and (row := rows.get(notice.row_id)) is not None:
                view = notification_view(row).model_dump(mode="json", by_alias=True)
                for stream in streams:
                    stream.push(view, row["traceparent"])
            elif notice.kind == REVOKED:
                for stream in streams:
                    if (notice.user_id, stream.session_id) in ended:
                        stream.end()

    def _end_all(self) -> None:
        for streams in self._streams.values():
            for stream in streams:
                stream.end()

    async def run(self) -> None:
        """Listens until cancelled, reconnecting after Postgres restarts."""
        delivering = asyncio.create_task(self.deliver(), name="notification-delivery")
        backoff = Backoff()
        try:
            while True:
                try:
                    await self._listen_until_lost()
                    backoff.succeeded()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("notification listener down: %s", type(exc).__name__)
                self._end_all()
                await backoff.pause()
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)

    async def _listen_until_lost(self) -> None:
        listen_at = self._settings.listen_database_url
        conn = await db.connect(
            self._settings, "notifications", listen_at.get_secret_value() if listen_at else None
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(queries.NEW_NOTIFICATION_CHANNEL, self._on_notice)
            await conn.add_listener(queries.SESSIONS_REVOKED_CHANNEL, self._on_notice)
            self._listening = conn
            await lost.wait()
        finally:
            self._listening = None
            if not conn.is_closed():
                await conn.close()
