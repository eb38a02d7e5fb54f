"""The consumer's batches (`EventHandler.apply_many`) against the real RabbitMQ and Postgres:
a scratch queue and a scratch table, so the running services stay out of it."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import asyncpg
import pytest
from pydantic import Field

from services.tracking.settings import TrackingSettings
from shopkit import db
from shopkit.consumer import (
    REASON_HEADER,
    Consumer,
    EventData,
    EventHandler,
    IncomingEvent,
    Subscription,
)
from shopkit.topology import declare_all
from tests.conftest import scratch_settings
from tests.events import publish_event, take_dead_letters
from tests.harness import RABBITMQ_URL, eventually


class Counted(EventData):
    n: int = Field(ge=0)


@dataclass
class Scratch:
    schema: str
    pool: db.Pool
    event_type: str
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return f"test.{self.schema}"

    async def applied(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return [r["n"] for r in await conn.fetch("SELECT n FROM applied ORDER BY n")]


async def _insert(conn: asyncpg.Connection, events: list[IncomingEvent]) -> None:
    # Deduplicates itself (the primary key); the CHECK refuses n = 13, a failure on every try.
    await conn.execute(
        "INSERT INTO applied (n) SELECT unnest($1::int[]) ON CONFLICT DO NOTHING",
        [e.data.n for e in events],
    )


@pytest.fixture
async def scratch(admin_db: asyncpg.Pool) -> AsyncIterator[Scratch]:
    schema = f"batches_{uuid.uuid4().hex[:8]}"
    await admin_db.execute(f"CREATE SCHEMA {schema}")
    await admin_db.execute(
        f"CREATE TABLE {schema}.applied (n int PRIMARY KEY CHECK (n <> 13))"
    )
    settings = _settings()
    pool = await db.create_pool(settings, schema)
    try:
        yield Scratch(schema, pool, f"test.batch.{schema}")
    finally:
        await pool.close()
        await admin_db.execute(f"DROP SCHEMA {schema} CASCADE")
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            for suffix in ("", ".dlq", ".retry"):
                await channel.queue_delete(f"test.{schema}{suffix}")
            await channel.exchange_delete(f"test.{schema}.requeue")


def _settings() -> TrackingSettings:
    return scratch_settings(
        TrackingSettings, consumer_max_retries=1, consumer_retry_delay_seconds=0.05
    )


async def _consuming(scratch: Scratch) -> asyncio.Task[None]:
    """Starts a consumer whose handler records the size of every batch it is given."""

    async def insert_many(conn: asyncpg.Connection, events: list[IncomingEvent]) -> None:
        scratch.batch_sizes.append(len(events))
        await _insert(conn, events)

    async def insert_one(conn: asyncpg.Connection, event: IncomingEvent) -> None:
        await _insert(conn, [event])

    handler = EventHandler(Counted, insert_one, deduplicates_itself=True, apply_many=insert_many)
    subscription = Subscription(
        scratch.queue, {scratch.event_type: handler}, owners={"test": "test"}
    )
    await declare_all(RABBITMQ_URL, [subscription])  # the bootstrap's part
    consumer = Consumer(scratch.pool, _settings(), subscription)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: _true(consumer.is_consuming))
    return task


async def _true(value: bool) -> bool:
    return value


async def _publish(scratch: Scratch, numbers: list[int]) -> None:
    for n in numbers:
        await publish_event(scratch.event_type, {"n": n})


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_that_wait_together_are_applied_together_each_once(
    scratch: Scratch,
) -> None:
    task = await _consuming(scratch)
    await _stop(task)  # the queue and its bindings exist; now let events pile up in it
    await _publish(scratch, [*range(100, 160), *range(100, 110)])  # ten of them twice
    task = await _consuming(scratch)
    try:
        await eventually(lambda: _applied_are(scratch, list(range(100, 160))))
    finally:
        await _stop(task)
    assert max(scratch.batch_sizes) > 1, scratch.batch_sizes
    assert sum(scratch.batch_sizes) == 70, "each delivery was in exactly one batch"


async def _applied_are(scratch: Scratch, expected: list[int]) -> bool:
    return await scratch.applied() == expected


async def test_a_failing_event_fails_alone_and_its_batch_mates_are_applied(
    scratch: Scratch,
) -> None:
    task = await _consuming(scratch)
    await _stop(task)
    await _publish(scratch, [*range(10), 13, *range(20, 30)])
    task = await _consuming(scratch)
    try:
        await eventually(lambda: _applied_are(scratch, [*range(10), *range(20, 30)]))
        dead = await eventually(lambda: take_dead_letters(scratch.queue))
    finally:
        await _stop(task)
    assert len(dead) == 1 and '"n":13' in dead[0].body.decode().replace(" ", "")
    assert "failed 2 times" in dead[0].headers[REASON_HEADER]
    assert max(scratch.batch_sizes) > 1, "13 went into a batch with others at first"
