"""Watching `shop.events` from a test: a queue of its own, polled with a deadline."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from shopkit.events import owner_of
from tests.harness import RABBITMQ_URL


class EventWatcher:
    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue

    async def next(self, deadline_seconds: float = 15) -> AbstractIncomingMessage:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            try:
                message = await self.queue.get(fail=False, no_ack=True)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
                message = None  # the broker is restarting: keep polling until the deadline
            if message is not None:
                return message
            await asyncio.sleep(0.02)
        raise AssertionError("no event arrived before the deadline")

    async def next_where(
        self, wanted: Any, deadline_seconds: float = 15
    ) -> AbstractIncomingMessage:
        """The next event whose body `wanted` accepts: other tests' events (a session an earlier
        test's command ended, published by the relay's poll) may come first."""
        deadline = time.monotonic() + deadline_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            message = await self.next(remaining)
            if wanted(orjson.loads(message.body)):
                return message
        raise AssertionError("no such event arrived before the deadline")

    async def bodies_until(
        self, done: Any, deadline_seconds: float = 30
    ) -> list[dict[str, Any]]:
        """Collects event bodies until `done(bodies)` holds, or fails at the deadline."""
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + deadline_seconds
        while not done(bodies):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(bodies)} events arrived before the deadline")
            bodies.append(orjson.loads((await self.next(remaining)).body))
        return bodies


@asynccontextmanager
async def watch_events(*routing_keys: str, durable: bool = False) -> AsyncIterator[EventWatcher]:
    """A queue bound to `shop.events`; durable ones survive a broker restart mid-test."""
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "shop.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        name = f"test.watch.{uuid.uuid4().hex[:12]}" if durable else ""
        queue = await channel.declare_queue(
            name, durable=durable, exclusive=not durable, auto_delete=False
        )
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        yield EventWatcher(queue)
        if durable:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


async def publish_event(
    event_type: str,
    data: dict[str, Any],
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    raw_body: bytes | None = None,
    routing_key: str | None = None,
    source: str | None = None,
) -> uuid.UUID:
    """Publishes to `shop.events` as the service owning the type would (or `raw_body` as it
    is, for poison; `routing_key` to send an event under another type's key; `source` to
    claim another source than the type's owner)."""
    event_id = event_id or uuid.uuid4()
    body = raw_body if raw_body is not None else orjson.dumps({
        "id": str(event_id),
        "type": event_type,
        "occurredAt": (occurred_at or datetime.now(UTC)).isoformat(),
        "source": source or owner_of(event_type) or "test",
        "data": data,
    })
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            "shop.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(
            aio_pika.Message(
                body, message_id=str(event_id), type=event_type,
                content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key or event_type,
        )
    finally:
        await connection.close()
    return event_id


async def take_dead_letters(queue: str) -> list[AbstractIncomingMessage]:
    """Takes every message now in `<queue>.dlq`, so each test sees only its own."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(f"{queue}.dlq", durable=True, passive=True)
        taken = []
        while (message := await dlq.get(fail=False, no_ack=True)) is not None:
            taken.append(message)
        return taken
