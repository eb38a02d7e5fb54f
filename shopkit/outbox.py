"""The transactional outbox: events are rows committed with the change, published by a relay.

`add_event` writes the event in the caller's transaction, so a change and its event commit or
roll back together: an event is never lost while RabbitMQ is down, nor sent for a change that
did not happen. The relay publishes pending rows with publisher confirms and marks them only
after the confirm, so a crash in between re-sends (at least once; consumers deduplicate by id).

Several relays (one per instance) share the work with `FOR UPDATE SKIP LOCKED`. Order within one
aggregate holds because a relay publishes an aggregate's rows one after another, and leaves an
aggregate alone while an earlier row of it is locked by another relay.

A relay is woken by its own process: when a connection of its pool that wrote an event comes
back (`event_written`), its transaction over, so the event leaves as the change's response
does. Rows that another process wrote and could not publish (it died, or its broker was down)
are found by every relay's poll. Postgres' NOTIFY would wake every instance, but at a price
paid on every change: it serialises the commits of all transactions that notify, and wakes
every listening backend of the database for each one.
"""

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from shopkit import db, tracing
from shopkit.backoff import Backoff
from shopkit.broker import Broker, BrokerUnavailable, OutgoingMessage
from shopkit.db import DATABASE_ERRORS
from shopkit.events import EXCHANGE, Event
from shopkit.settings import ServiceSettings

log = logging.getLogger("shopkit.outbox")

# Published rows are kept this long for inspection, then pruned.
RETENTION = timedelta(hours=1)


# How many parameters of a statement the event takes (event_parameters).
EVENT_PARAMETERS = 6


def event_insert(first_parameter: int, gate: str, data: str, occurred_at: str) -> str:
    """The outbox insert, for a statement that writes a change and its event in one round trip:
    a data-modifying CTE body, written once here for every caller, the one place the contract's
    envelope (`{id, type, occurredAt, source, data}`) is written.

    Its six parameters, from $`first_parameter` on, are `event_parameters(...)`. `gate` is a
    relation of the statement (a CTE's name): the event is written once per row of it, so a
    gate that is empty when the change was not made leaves the outbox alone. `data` (the
    event's data, a jsonb) and `occurred_at` (a timestamptz) are SQL expressions over the
    gate's columns: values only the statement knows (what it read under its locks, the
    database's clock) go into the event as it makes them. Only the numbers of parameters are
    put into the text; every value stays a parameter.

    The aggregate's advisory lock, taken before the row (and so its id) is made and held to
    commit, makes transactions writing events of one aggregate take their outbox ids in commit
    order; the relay relies on that order. The caller calls `event_written` once it ran it.
    """
    event_id, event_type, source, aggregate, request_id, traceparent = (
        f"${n}" for n in range(first_parameter, first_parameter + EVENT_PARAMETERS)
    )
    return f"""
        INSERT INTO outbox (event_id, event_type, aggregate_id, body, request_id, traceparent)
        SELECT {event_id}::uuid, {event_type}::text, {aggregate}::text,
            jsonb_build_object(
                'id', {event_id}::uuid, 'type', {event_type}::text,
                'occurredAt', to_char(at AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                'source', {source}::text, 'data', data),
            {request_id}::text, {traceparent}::text
        FROM (SELECT pg_advisory_xact_lock(hashtextextended('outbox:' || {aggregate}, 0)),
                     ({data}) AS data, ({occurred_at}) AS at
              FROM {gate}) AS locked
    """


def event_parameters(
    event_id: uuid.UUID, event_type: str, source: str, aggregate_id: str, request_id: str | None
) -> tuple[Any, ...]:
    """Made inside the span that writes the event: the row keeps that span's traceparent, so
    the event's publish and its handling join that trace."""
    return event_id, event_type, source, aggregate_id, request_id, tracing.traceparent()


_ADD_EVENT = event_insert(
    1, gate="(SELECT $7::jsonb AS given_data, $8::timestamptz AS given_at) AS given",
    data="given_data", occurred_at="given_at",
)


async def add_event(
    conn: asyncpg.Connection, event: Event, aggregate_id: str, request_id: str | None
) -> None:
    """Adds `event` to the outbox inside the caller's open transaction, in one round trip."""
    await conn.execute(
        _ADD_EVENT,
        *event_parameters(event.id, event.type, event.source, aggregate_id, request_id),
        event.data, event.occurred_at,
    )
    event_written(conn)


# The connections, as lent, whose user wrote an outbox row since they were lent. (A connection
# of no pool, a command-line tool's, stays here: such a process writes a few and exits.)
_WROTE: set[asyncpg.Connection] = set()


def event_written(conn: asyncpg.Connection) -> None:
    """Says that `conn` wrote an outbox row: when it goes back to its pool, with its
    transaction over, this process's relay wakes and publishes. A connection of no pool (a
    command-line tool's) wakes nobody; the relays' poll finds its rows."""
    _WROTE.add(conn)


# $1: the batch size. See OutboxRelay._claim.
CLAIM = """
    WITH candidates AS MATERIALIZED (
        SELECT id, aggregate_id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1
    ), claimed AS (
        SELECT id, event_id, event_type, aggregate_id, body::text AS body, request_id,
            traceparent
        FROM outbox
        WHERE id IN (SELECT id FROM candidates) AND published_at IS NULL
        ORDER BY id FOR UPDATE SKIP LOCKED
    )
    SELECT * FROM claimed WHERE NOT EXISTS (
        SELECT FROM candidates earlier
        WHERE earlier.aggregate_id = claimed.aggregate_id AND earlier.id < claimed.id
          AND earlier.id NOT IN (SELECT id FROM claimed)
    )
    ORDER BY id
"""


@dataclass
class _Row:
    id: int
    aggregate_id: str
    message: OutgoingMessage


class OutboxRelay:
    def __init__(
        self,
        pool: db.Pool,
        broker: Broker,
        settings: ServiceSettings,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._stopping = False
        # Set when a connection of the pool comes back having written an event.
        self._woken = asyncio.Event()
        pool.on_release(self._released)

    def _released(self, conn: asyncpg.Connection) -> None:
        if conn in _WROTE:
            _WROTE.discard(conn)
            self._woken.set()

    async def run(self) -> None:
        """Publishes until `stop` (or cancelled); outages of Postgres or RabbitMQ only pause it."""
        backoff = Backoff(first=0.1)
        while True:
            # A pass begun after `stop` sees every event committed before it: the last one.
            last_pass = self._stopping
            try:
                published = await self.publish_pending()
            except (*DATABASE_ERRORS, BrokerUnavailable) as exc:
                log.warning("outbox relay paused: %s", type(exc).__name__)
            except Exception:
                # Whatever else goes wrong (too many connections, a full disk...), the relay
                # must outlive it: events would otherwise pile up until a restart.
                log.exception("outbox relay failed; retrying")
            else:
                if last_pass:
                    return
                backoff.succeeded()
                if published < self._settings.outbox_batch_size and not self._stopping:
                    await self._sleep(self._settings.outbox_poll_interval_seconds)
                # else a full batch (more are likely waiting) or a stop (the last pass) next
                continue
            if self._stopping:
                return  # what is still pending waits for the next relay
            await backoff.pause()

    def stop(self) -> None:
        """Asks `run` to return after one more pass. Called once the process's requests are
        done, that pass publishes the events they wrote, rather than leaving them to the next
        relay's poll; and a pass in progress finishes instead of being cancelled mid-publish."""
        self._stopping = True
        self._woken.set()  # a relay waiting for events goes on at once

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

        The candidates are the first pending rows in id order, as this statement sees them.
        Of those not locked by another relay, a row is ours unless an earlier candidate of its
        aggregate is not (another relay holds it): an aggregate's rows go out in id order,
        whichever relay takes them (rows of one aggregate are committed in id order, so an
        earlier row is always among the candidates). Such rows stay locked by us but wait for
        the next pass.

        One statement, one round trip. The check compares the batch with itself, never with
        the table: its cost does not grow with a backlog, and does not depend on what the
        planner believes about the table (its statistics, taken when nothing was pending, say
        nearly nothing is).
        """
        rows = await conn.fetch(CLAIM, self._settings.outbox_batch_size)
        return [
            _Row(
                r["id"],
                r["aggregate_id"],
                OutgoingMessage(
                    str(r["event_id"]), r["event_type"], r["body"].encode(), r["request_id"],
                    r["traceparent"],
                ),
            )
            for r in rows
        ]

    async def _publish_in_order(self, rows: list[_Row]) -> list[int]:
        """Publishes one aggregate's rows one by one; stops at the first failure. Each in a
        span of the trace that wrote it (none when it was not traced)."""
        published = []
        for row in rows:
            message = row.message
            try:
                with tracing.message_span(message.traceparent, "publish", message.event_type,
                                          message.event_id, EXCHANGE):
                    await self._broker.publish(message)
            except BrokerUnavailable:
                break
            published.append(row.id)
        return published

    async def _sleep(self, seconds: float) -> None:
        """Until a connection of our pool brings back an event, or the poll is due. An event
        released during the pass just made wakes us at once: the claim may have missed it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)
        self._woken.clear()


# Rows not yet published, and how long the oldest has waited (NULL when none waits).
BACKLOG = """
    SELECT count(*) AS unsent,
           extract(epoch FROM now() - min(created_at))::float8 AS oldest_age
    FROM outbox WHERE published_at IS NULL
"""


@dataclass(frozen=True)
class Backlog:
    unsent: int
    oldest_age_seconds: float | None  # None when nothing waits


async def backlog(conn: asyncpg.Connection) -> Backlog:
    """The outbox's backlog, for the metrics (shop_outbox_*) and the operations panel."""
    row = await conn.fetchrow(BACKLOG)
    return Backlog(row["unsent"], row["oldest_age"])


async def prune_published(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - $1::interval", RETENTION
        )
