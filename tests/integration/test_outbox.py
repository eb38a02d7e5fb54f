"""The outbox relay against the real Postgres and RabbitMQ, in a scratch schema of its own
(so the running services' relays stay out of it)."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest

from services.orders.settings import OrdersSettings
from shopkit import db
from shopkit.broker import Broker
from shopkit.events import Event
from shopkit.migrations import KIT_MIGRATIONS, apply_migrations
from shopkit.outbox import CLAIM, OutboxRelay, add_event
from tests.conftest import scratch_settings
from tests.events import watch_events
from tests.harness import RABBITMQ_URL, eventually


@dataclass
class Scratch:
    schema: str
    settings: OrdersSettings
    pool: db.Pool
    broker: Broker
    event_type: str

    async def fetchval(self, statement: str, *args: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(statement, *args)

    async def execute(self, statement: str, *args: Any) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(statement, *args)


@pytest.fixture
async def scratch(admin_db: asyncpg.Pool) -> AsyncIterator[Scratch]:
    schema = f"outbox_{uuid.uuid4().hex[:8]}"
    await admin_db.execute(f"CREATE SCHEMA {schema}")
    settings = scratch_settings(
        OrdersSettings, outbox_batch_size=5, outbox_poll_interval_seconds=0.2
    )
    conn = await db.connect(settings, schema)
    try:
        await apply_migrations(conn, schema, KIT_MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(settings, schema)
    broker = Broker(RABBITMQ_URL, "outbox-test")
    broker.start()
    async with asyncio.timeout(15):
        await broker.first_connection()
    try:
        yield Scratch(schema, settings, pool, broker, f"test.outbox.{schema}")
    finally:
        await broker.close()
        await pool.close()
        await admin_db.execute(f"DROP SCHEMA {schema} CASCADE")


async def _write(scratch: Scratch, aggregate: str, seq: int) -> Event:
    event = Event(type=scratch.event_type, source="test", data={"aggregate": aggregate, "seq": seq})
    async with scratch.pool.acquire() as conn, conn.transaction():
        await add_event(conn, event, aggregate_id=aggregate, request_id=f"req-{aggregate}-{seq}")
    return event


def _nothing_pending(scratch: Scratch) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await scratch.fetchval(
            "SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"
        )

    return check


async def test_several_relays_publish_everything_in_order_per_aggregate(scratch: Scratch) -> None:
    aggregates = [f"agg-{n}" for n in range(8)]
    per_aggregate = 15
    async with watch_events(scratch.event_type) as events:
        relays = [
            asyncio.create_task(
                OutboxRelay(scratch.pool, scratch.broker, scratch.settings).run()
            )
            for _ in range(3)
        ]
        try:

            async def write_all(aggregate: str) -> None:
                for seq in range(per_aggregate):
                    await _write(scratch, aggregate, seq)

            # Writers of different aggregates run at once, while the relays are publishing.
            await asyncio.gather(*(write_all(a) for a in aggregates))
            total = len(aggregates) * per_aggregate
            bodies = await events.bodies_until(
                lambda got: len({b["id"] for b in got}) >= total, deadline_seconds=60
            )
            # A relay marks its rows after their confirms, so a moment after they arrive.
            await eventually(_nothing_pending(scratch), deadline_seconds=10)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    seen: dict[str, list[int]] = {a: [] for a in aggregates}
    first_arrivals = {}
    for body in bodies:
        first_arrivals.setdefault(body["id"], body)
    for body in first_arrivals.values():
        seen[body["data"]["aggregate"]].append(body["data"]["seq"])
    assert all(seqs == list(range(per_aggregate)) for seqs in seen.values()), repr(seen)



async def test_a_relay_leaves_an_aggregate_alone_while_another_holds_its_earlier_row(
    scratch: Scratch,
) -> None:
    """Another relay has claimed X's first row and not yet published it: X's second row must
    wait, or it would go out first. Other aggregates' rows are taken meanwhile."""
    first_of_x, second_of_x = await _write(scratch, "X", 0), await _write(scratch, "X", 1)
    only_of_y = await _write(scratch, "Y", 0)
    async with scratch.pool.acquire() as other_relay, other_relay.transaction():
        await other_relay.execute(
            "SELECT FROM outbox WHERE event_id = $1 FOR UPDATE", first_of_x.id
        )
        assert await _claimed(scratch) == [only_of_y.id]
    assert await _claimed(scratch) == [first_of_x.id, second_of_x.id, only_of_y.id]


async def _claimed(scratch: Scratch) -> list[uuid.UUID]:
    """The event ids one claim takes (and lets go again)."""
    async with scratch.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM, 100)
        return [row["event_id"] for row in rows]


class _DiesAfterPublishing(OutboxRelay):
    """A relay whose process dies after RabbitMQ confirmed, before it marked the rows."""

    async def _publish_in_order(self, rows):  # type: ignore[no-untyped-def]
        await super()._publish_in_order(rows)
        raise SystemError("process died")


async def test_a_relay_dying_between_publish_and_mark_loses_nothing(scratch: Scratch) -> None:
    written = [await _write(scratch, "order-1", seq) for seq in range(3)]
    async with watch_events(scratch.event_type) as events:
        dying = _DiesAfterPublishing(scratch.pool, scratch.broker, scratch.settings)
        with pytest.raises(SystemError):
            await dying.publish_pending()
        pending = await scratch.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        assert pending == 3, "nothing was marked: the rows wait for the next relay"

        relay = OutboxRelay(scratch.pool, scratch.broker, scratch.settings)
        assert await relay.publish_pending() == 3
        bodies = await events.bodies_until(lambda got: len(got) >= 6)
    ids = [b["id"] for b in bodies]
    # At least once: each event arrived twice, under the same id, in order each time.
    assert ids == [str(e.id) for e in written] * 2
    assert await scratch.fetchval(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    ) == 0


async def test_an_event_rolled_back_with_its_change_is_never_published(scratch: Scratch) -> None:
    event = Event(type=scratch.event_type, source="test", data={"aggregate": "x", "seq": 0})
    with pytest.raises(RuntimeError):
        async with scratch.pool.acquire() as conn, conn.transaction():
            await add_event(conn, event, aggregate_id="x", request_id=None)
            raise RuntimeError("the change failed")
    relay = OutboxRelay(scratch.pool, scratch.broker, scratch.settings)
    assert await relay.publish_pending() == 0
    assert await scratch.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_idle_relay_wakes_when_its_pool_gets_back_an_event_not_on_its_poll(
    scratch: Scratch,
) -> None:
    settings = scratch.settings.model_copy(update={"outbox_poll_interval_seconds": 60.0})
    relay = asyncio.create_task(OutboxRelay(scratch.pool, scratch.broker, settings).run())
    try:
        async with watch_events(scratch.event_type) as events:
            # Once the first event is out, the relay has nothing left and waits out its poll.
            await _write(scratch, "woken", 0)
            await events.bodies_until(lambda got: len(got) >= 1, deadline_seconds=10)
            event = await _write(scratch, "woken", 1)
            # Well inside the 60 s poll: only the connection's return to the pool, after
            # the commit, can have woken it.
            bodies = await events.bodies_until(lambda got: len(got) >= 1, deadline_seconds=10)
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
    assert bodies[0]["id"] == str(event.id)


async def test_a_row_another_instance_wrote_is_found_by_the_poll(scratch: Scratch) -> None:
    """Another instance's row (one whose relay died, or could not reach RabbitMQ) wakes no
    relay here: this relay's poll publishes it."""
    relay = asyncio.create_task(OutboxRelay(scratch.pool, scratch.broker, scratch.settings).run())
    event = Event(type=scratch.event_type, source="test", data={"aggregate": "other", "seq": 0})
    other_instance = await db.create_pool(scratch.settings, scratch.schema)
    try:
        async with watch_events(scratch.event_type) as events:
            async with other_instance.acquire() as conn, conn.transaction():
                await add_event(conn, event, aggregate_id="other", request_id=None)
            bodies = await events.bodies_until(lambda got: len(got) >= 1, deadline_seconds=10)
    finally:
        await other_instance.close()
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
    assert bodies[0]["id"] == str(event.id)


async def test_a_stopped_relay_makes_a_last_pass_then_returns(scratch: Scratch) -> None:
    """At shutdown the relay waits out a long poll, and an event was committed that did not
    wake it (another instance's): `stop` wakes it, and its last pass publishes the event."""
    settings = scratch.settings.model_copy(update={"outbox_poll_interval_seconds": 60.0})
    relay = OutboxRelay(scratch.pool, scratch.broker, settings)
    running = asyncio.create_task(relay.run())
    other_instance = await db.create_pool(scratch.settings, scratch.schema)
    last = Event(type=scratch.event_type, source="test", data={"aggregate": "a", "seq": 1})
    try:
        async with watch_events(scratch.event_type) as events:
            # Once this one is out (its connection's return woke the relay), the relay has
            # nothing left and waits out its poll.
            await _write(scratch, "a", 0)
            await events.bodies_until(lambda got: len(got) >= 1, deadline_seconds=10)
            async with other_instance.acquire() as conn, conn.transaction():
                await add_event(conn, last, aggregate_id="a", request_id=None)
            relay.stop()
            async with asyncio.timeout(10):
                await running
            bodies = await events.bodies_until(lambda got: len(got) >= 1, deadline_seconds=10)
    finally:
        await other_instance.close()
        running.cancel()
    assert bodies[0]["id"] == str(last.id)
    assert await _nothing_pending(scratch)()


class _StoppedMidPass(OutboxRelay):
    """A relay told to stop while its pass is publishing (the process got SIGTERM then)."""

    async def _publish_in_order(self, rows):  # type: ignore[no-untyped-def]
        self.stop()
        return await super()._publish_in_order(rows)


async def test_a_relay_stopped_mid_pass_finishes_the_pass_and_marks_its_rows(
    scratch: Scratch,
) -> None:
    """Cancelled instead, the pass would roll back: its events, already out or not, would be
    sent again by the next relay."""
    written = [await _write(scratch, "order-1", seq) for seq in range(3)]
    async with watch_events(scratch.event_type) as events:
        async with asyncio.timeout(10):
            await _StoppedMidPass(scratch.pool, scratch.broker, scratch.settings).run()
        bodies = await events.bodies_until(lambda got: len(got) >= 3)
    assert [b["id"] for b in bodies] == [str(e.id) for e in written]
    assert await _nothing_pending(scratch)()


async def test_a_relays_claim_reads_one_batch_however_long_the_backlog(scratch: Scratch) -> None:
    """The claim's cost must not grow with the backlog. Its statistics were taken when nothing
    was pending (as they mostly are in a queue), and its plan is made once and kept: a claim
    that compared every pending row with every claimed one read the whole backlog for each."""
    await scratch.execute(
        """
        INSERT INTO outbox (event_id, event_type, aggregate_id, body, published_at)
        SELECT gen_random_uuid(), 'test', 'done-' || n, '{}', now()
        FROM generate_series(1, 200) AS n
        """
    )
    await scratch.execute("ANALYZE outbox")
    await scratch.execute(
        """
        INSERT INTO outbox (event_id, event_type, aggregate_id, body)
        SELECT gen_random_uuid(), 'test', 'agg-' || n % 40, '{}'
        FROM generate_series(1, 4000) AS n
        """
    )
    async with scratch.pool.acquire() as conn, conn.transaction():
        await conn.execute(f"PREPARE claim(int) AS {CLAIM}")  # the kit's own text, no values
        plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim(100)")
        await conn.execute("DEALLOCATE claim")
    top = orjson.loads(plan)[0]["Plan"]
    assert top["Actual Rows"] == 100
    assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] < 1_000
