"""The transactional outbox: events are rows committed with the change, published by a relay.

`add_event` writes the event in the caller's transaction, so a change and its event commit or
roll back together: an event is never lost while RabbitMQ is down, nor sent for a change that
did not happen. The relay publishes pending rows with publisher confirms and marks them only
after the confirm, so a crash in between re-sends (at least once; consumers deduplicate by id).

Several relays (one per instance) share the work with `FOR UPDATE SKIP LOCKED`. Order within one
aggregate holds because a relay publishes an aggregate's rows one after another, and leaves an
aggregate alone while an earlier row of it is locked by another relay.
"""

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from shopkit import db
from shopkit.broker import Broker, BrokerUnavailable, OutgoingMessage
from shopkit.db import DATABASE_ERRORS
from shopkit.events import Event
from shopkit.settings import ServiceSettings

log = logging.getLogger("shopkit.outbox")

# Published rows are kept this long for inspection, then pruned.
RETENTION = timedelta(hours=1)


def channel_for(schema: str) -> str:
    return f"{schema}_outbox"


def event_insert(first_parameter: int, gate: str) -> str:
    """The outbox insert, for a statement that writes a change and its event in one round trip:
    a data-modifying CTE body, written once here for every caller.

    Its five parameters, from $`first_parameter` on, are `event_parameters(...)`. `gate` is a
    relation of the statement (a CTE's name): the event is written once per row of it, so a
    gate that is empty when the change was not made leaves the outbox alone. Only the numbers
    of parameters are put into the text; every value stays a parameter.

    The aggregate's advisory lock, taken before the row (and so its id) is made and held to
    commit, makes transactions writing events of one aggregate take their outbox ids in commit
    order; the relay relies on that order. The NOTIFY is delivered at commit, and only if the
    transaction commits: it wakes the relays at once.
    """
    event_id, event_type, aggregate, body, request_id = (
        f"${n}" for n in range(first_parameter, first_parameter + 5)
    )
    return f"""
        INSERT INTO outbox (event_id, event_type, aggregate_id, body, request_id)
        SELECT {event_id}, {event_type}, {aggregate}, {body}, {request_id}
        FROM (SELECT pg_advisory_xact_lock(hashtextextended('outbox:' || {aggregate}, 0))
              FROM {gate}) AS locked
        RETURNING pg_notify(current_schema() || '_outbox', '')
    """


def event_parameters(
    event: Event, aggregate_id: str, request_id: str | None
) -> tuple[Any, ...]:
    return event.id, event.type, aggregate_id, event.envelope(), request_id


_ADD_EVENT = event_insert(1, gate="(SELECT) AS always")


async def add_event(
    conn: asyncpg.Connection, event: Event, aggregate_id: str, request_id: str | None
) -> None:
    """Adds `event` to the outbox inside the caller's open transaction, in one round trip."""
    await conn.execute(_ADD_EVENT, *event_parameters(event, aggregate_id, request_id))


@dataclass
class _Row:
    id: int
    aggregate_id: str
    message: OutgoingMessage


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        settings: ServiceSettings,
        schema: str,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._schema = schema
        self._wakeup = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Publishes until cancelled; outages of Postgres or RabbitMQ only pause it."""
        delay = 0.1
        try:
            while True:
                try:
                    await self._listen()
                    if await self.publish_pending() == self._settings.outbox_batch_size:
                        continue  # a full batch: more are likely waiting
                    delay = 0.1
                    await self._sleep(self._settings.outbox_poll_interval_seconds)
                except (*DATABASE_ERRORS, BrokerUnavailable) as exc:
                    log.warning("outbox relay paused: %s", type(exc).__name__)
                    await self._back_off(delay)
                    delay = min(delay * 2, 5.0)
                except Exception:
                    # Whatever else goes wrong (too many connections, a full disk...), the relay
                    # must outlive it: events would otherwise pile up until a restart.
                    log.exception("outbox relay failed; retrying")
                    await self._back_off(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            await self._close_listener()

    async def publish_pending(self) -> int:
        """One pass: publishes up to a batch of pending rows; returns how many went out."""
        if not self._broker.is_ready:
            raise BrokerUnavailable()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._claim(conn)
            if not rows:
                return 0
            groups: dict[str, list[_Row]] = defaultdict(list)
            for row in rows:
                groups[row.aggregate_id].append(row)
            results = await asyncio.gather(*(self._publish_in_order(g) for g in groups.values()))
            published = [row_id for ids in results for row_id in ids]
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", published
            )
        if len(published) < len(rows):
            raise BrokerUnavailable()
        return len(published)

    async def _claim(self, conn: asyncpg.Connection) -> list[_Row]:
        """Locks a batch of pending rows, minus aggregates another relay is still publishing.

        An earlier pending row of an aggregate that is not in our batch is locked by another
        relay (rows of one aggregate are committed in id order): that aggregate's rows stay
        locked by us but wait for the next pass. One statement, one round trip.
        """
        rows = await conn.fetch(
            """
            WITH claimed AS (
                SELECT id, event_id, event_type, aggregate_id, body::text AS body, request_id
                FROM outbox WHERE published_at IS NULL
                ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            SELECT * FROM claimed c WHERE NOT EXISTS (
                SELECT FROM outbox o
                WHERE o.published_at IS NULL AND o.aggregate_id = c.aggregate_id
                  AND o.id < c.id AND o.id NOT IN (SELECT id FROM claimed)
            )
            ORDER BY id
            """,
            self._settings.outbox_batch_size,
        )
        return [
            _Row(
                r["id"],
                r["aggregate_id"],
                OutgoingMessage(
                    str(r["event_id"]), r["event_type"], r["body"].encode(), r["request_id"]
                ),
            )
            for r in rows
        ]

    async def _publish_in_order(self, rows: list[_Row]) -> list[int]:
        """Publishes one aggregate's rows one by one; stops at the first failure."""
        published = []
        for row in rows:
            try:
                await self._broker.publish(row.message)
            except BrokerUnavailable:
                break
            published.append(row.id)
        return published

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await db.connect(self._settings, self._schema)
        await self._listener.add_listener(channel_for(self._schema), self._on_notify)

    async def _back_off(self, seconds: float) -> None:
        await self._close_listener()
        await asyncio.sleep(seconds)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._listener.close(timeout=1)
            self._listener = None



async def prune_published(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM outbox WHERE published_at < now() - $1::interval", RETENTION)
