"""Consuming events from `shop.events`: each event applied once, none lost, none looping.

Each subscription has a durable quorum queue `<service>.<purpose>` bound to `shop.events`, and
beside it (shopkit.topology, declared by the bootstrap):
- `<queue>.dlq`: where a message goes with the reason once it cannot be processed;
- `<queue>.retry`, whose messages wait out a per-message TTL and are dead-lettered back into the
  queue: the retry with backoff, without holding a consumer slot while waiting;
- `<queue>.requeue`, a direct exchange through which the consumer sends a message to its retry
  queue or its DLQ (routing keys RETRY and DEAD): its RabbitMQ user may write there, and to no
  other queue (the default exchange would reach every queue).
A consumer only checks that its queue and exchange are there, since its own user may not
configure anything. It connects to any node of the cluster, and to another when its node goes.

An event is processed only when its `source` is the component that owns its type
(shopkit.events.EVENT_OWNERS) and it came under its type's routing key (which only the owner
may publish with); any other goes to the DLQ, as does a malformed one.

A message is acknowledged only after the service's transaction commits. That transaction first
writes the event id to the `inbox` table (per queue), so a redelivered or republished event finds
its row and changes nothing; a handler that is one self-deduplicating statement needs no inbox
(`EventHandler.deduplicates_itself`). A malformed message (bad JSON, unknown type, missing
fields) goes to the DLQ at once; a handler failure is retried `consumer_max_retries` times, the
delay doubling, then dead-lettered. A database that cannot serve (is_transient) is no fault of
the message: it is kept and applied again once the database answers, without counting as an
attempt (putting it back would spend one of the queue's deliveries). Several instances
share each queue (competing consumers); the inbox and the handlers' own locks make the results
the same. Handlers that can apply many events in one statement get them in batches
(`EventHandler.apply_many`).
"""

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from shopkit import tracing
from shopkit.backoff import Backoff
from shopkit.broker import closed_event, connect_to_a_node
from shopkit.db import Pool, is_transient
from shopkit.events import EVENT_OWNERS, EXCHANGE, owner_of
from shopkit.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED, EVENTS_RETRIED
from shopkit.settings import ServiceSettings

log = logging.getLogger("shopkit.consumer")
CLOSE_TIMEOUT_SECONDS = 5.0

# Routing keys of a subscription's requeue exchange.
RETRY, DEAD = "retry", "dlq"
RETRIES_HEADER = "x-retries"
REASON_HEADER = "x-dead-letter-reason"


class _Stopping(Exception):
    """The consumer stops while an event waits for the database."""


class Malformed(Exception):
    """The message can never be processed: straight to the dead-letter queue."""


class EventData(BaseModel):
    """Base of the models of event `data`: camelCase fields, unknown ones ignored (a producer
    may add fields without breaking its consumers)."""

    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")


class _Envelope(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)

    id: UUID
    type: str
    occurred_at: datetime
    source: str
    data: dict[str, Any]


@dataclass(frozen=True)
class IncomingEvent:
    id: UUID
    type: str
    occurred_at: datetime
    source: str
    data: Any  # the handler's pydantic model of `data`
    request_id: str | None


Handler = Callable[[asyncpg.Connection, IncomingEvent], Awaitable[None]]
BatchHandler = Callable[[asyncpg.Connection, list[IncomingEvent]], Awaitable[None]]


@dataclass(frozen=True)
class EventHandler:
    data_model: type[BaseModel]
    # Runs inside the transaction that also records the event in the inbox, unless...
    apply: Handler
    # ...`apply` is one statement that cannot change anything twice for one event (its own
    # unique keys or version checks see to that). It then runs on its own, as its own
    # transaction, with no inbox row: one round trip to Postgres instead of four (BEGIN,
    # inbox, apply, COMMIT), which is most of the time an event takes to be applied.
    deduplicates_itself: bool = False
    # One statement for several such events (of this type, or of others sharing the same
    # function), each as `apply` would have applied it. The events that arrive while one
    # runs go together in the next: under load a statement and a commit serve many events,
    # and an event that arrives alone goes at once. Needs `deduplicates_itself`.
    apply_many: BatchHandler | None = None

    def __post_init__(self) -> None:
        if self.apply_many is not None and not self.deduplicates_itself:
            raise ValueError("apply_many needs a handler that deduplicates itself")


class _Batches:
    """Gathers the events of one `apply_many` while its statement for the ones before runs.

    One statement at a time per function: the next batch is whatever arrived meanwhile (up
    to `max_size`), so nothing waits for a batch to fill. Each event's `add` returns once its
    batch committed, and raises what the batch raised: its message is then acked, or handled
    as a failure, exactly as a single event's would be.

    Traced, a batch's statement runs in one span, child of its first event's processing span
    and linked to each event's (tracing.span_for_all): one statement serves them all.
    """

    def __init__(self, pool: Pool, apply_many: BatchHandler, max_size: int) -> None:
        self._pool = pool
        self._apply_many = apply_many
        self._max_size = max_size
        self._waiting: list[tuple[IncomingEvent, asyncio.Future[None], Any]] = []
        self._draining: asyncio.Task[None] | None = None

    async def add(self, event: IncomingEvent) -> None:
        applied = asyncio.get_running_loop().create_future()
        self._waiting.append((event, applied, tracing.current()))
        if self._draining is None:
            # In a context of its own: it serves every event's batch, not the first one's.
            self._draining = asyncio.create_task(self._drain(), context=contextvars.Context())
        await applied  # cancelled, it leaves the batch (run by _drain) to its mates

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                try:
                    with tracing.span_for_all([traced for _, _, traced in batch], "apply batch",
                                              **{"shop.batch.events": len(batch)}):
                        async with self._pool.acquire() as conn:
                            await self._apply_many(conn, [event for event, _, _ in batch])
                except Exception as exc:
                    for _, applied, _ in batch:
                        if not applied.done():
                            applied.set_exception(exc)
                else:
                    for _, applied, _ in batch:
                        if not applied.done():
                            applied.set_result(None)
        finally:
            self._draining = None


@dataclass(frozen=True)
class Subscription:
    queue: str
    handlers: Mapping[str, EventHandler]  # event type (also the routing key) -> handler
    # Whose events are believed: the `source` each type's first word must come from.
    owners: Mapping[str, str] = field(default_factory=lambda: EVENT_OWNERS)

    @property
    def dead_letters(self) -> str:
        return f"{self.queue}.dlq"

    @property
    def retries(self) -> str:
        return f"{self.queue}.retry"

    @property
    def requeue_exchange(self) -> str:
        return f"{self.queue}.requeue"


def parse(message: AbstractIncomingMessage, subscription: Subscription) -> IncomingEvent:
    try:
        envelope = _Envelope.model_validate(orjson.loads(message.body))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise Malformed(f"not an event envelope: {exc}") from exc
    handler = subscription.handlers.get(envelope.type)
    if handler is None:
        raise Malformed(f"unknown event type {envelope.type!r}")
    if owner_of(envelope.type, subscription.owners) != envelope.source:
        raise Malformed(f"{envelope.type} from {envelope.source!r}, which does not own it")
    if not _routed_as(message, envelope.type, subscription):
        # RabbitMQ checked the publisher's right to the routing key, not to the body: an
        # auth.* key carrying an order event was published by someone who may not.
        raise Malformed(
            f"{envelope.type} came by {message.exchange!r} under {message.routing_key!r}"
        )
    try:
        data = handler.data_model.model_validate(envelope.data)
    except ValidationError as exc:
        raise Malformed(f"bad {envelope.type} data: {exc}") from exc
    request_id = (message.headers or {}).get("x-request-id")
    return IncomingEvent(
        envelope.id, envelope.type, envelope.occurred_at, envelope.source, data,
        str(request_id) if request_id else None,
    )


def _routed_as(
    message: AbstractIncomingMessage, event_type: str, subscription: Subscription
) -> bool:
    """Published to `shop.events` under its own type (the key whose publishing RabbitMQ
    allows its owner only), or back from this queue's retry queue or the DLQ tool (the
    default exchange, under the queue's name: no component may write there)."""
    return (message.exchange, message.routing_key) in (
        (EXCHANGE, event_type), ("", subscription.queue)
    )


class Consumer:
    def __init__(
        self, pool: Pool, settings: ServiceSettings, subscription: Subscription
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._subscription = subscription
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._consuming = False
        self._stopping = False
        self._finish_by: float | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._batches = {
            handler.apply_many: _Batches(pool, handler.apply_many, settings.consumer_prefetch)
            for handler in subscription.handlers.values()
            if handler.apply_many is not None
        }

    @property
    def queue(self) -> str:
        return self._subscription.queue

    @property
    def is_consuming(self) -> bool:
        return self._consuming and self._connection is not None and not self._connection.is_closed

    async def run(self) -> None:
        """Consumes until cancelled. A lost connection or channel (its node went, the broker
        restarted) is made again from the start, to any node that answers."""
        backoff = Backoff()
        while True:
            try:
                await self._consume()
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                log.warning("consumer not running: %s; retrying", type(exc).__name__,
                            extra={"queue": self.queue})
            finally:
                if self._consuming:
                    backoff.succeeded()  # it ran: the first pause again, not a longer one
                await self._finish_in_flight()
                await self._disconnect()
            await backoff.pause()

    async def stop(self, finish_within: float) -> None:
        """Takes no more messages: the process is shutting down. Those being handled get
        `finish_within` seconds from now to finish: `run`, when cancelled, waits for them
        before it closes the connection. Whatever is unacknowledged then is redelivered."""
        self._stopping = True
        self._consuming = False
        self._finish_by = asyncio.get_running_loop().time() + finish_within
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag, timeout=finish_within)
            except Exception as exc:  # the broker is gone: it delivers nothing more anyway
                log.warning("consumer not cancelled: %s", type(exc).__name__,
                            extra={"queue": self.queue})
        log.info("stopped consuming", extra={"queue": self.queue})

    async def _finish_in_flight(self) -> None:
        if self._finish_by is None:  # not stopping: the connection failed, nothing to wait for
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(self._finish_by):
                await self._idle.wait()
        if self._in_flight:
            log.warning("messages left unfinished", extra={"queue": self.queue,
                                                           "count": self._in_flight})

    async def _disconnect(self) -> None:
        self._consuming = False
        self._queue = self._consumer_tag = None
        if self._connection is not None:
            # Bounded: a close that never hears back from the broker must not hold the
            # shutdown; the connection goes with the process anyway.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self._connection.close()
            self._connection = None

    async def _consume(self) -> None:
        self._connection = await connect_to_a_node(
            self._settings.rabbitmq_url.get_secret_value(), f"{self.queue} consumer"
        )
        publishing = await self._connection.channel(publisher_confirms=True)
        # Both declared by the bootstrap; checked here, not declared (no configure right).
        self._publisher = await publishing.get_exchange(self._subscription.requeue_exchange)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._settings.consumer_prefetch)
        queue = await channel.get_queue(self.queue)
        closed = closed_event(self._connection, publishing, channel)
        if not self._stopping:  # stopped while connecting: nothing to take any more
            self._consumer_tag = await queue.consume(self._on_message)
            self._queue = queue
            self._consuming = True
            log.info("consuming", extra={"queue": self.queue})
        await closed.wait()
        raise ConnectionError("the connection to RabbitMQ, or one of its channels, closed")

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            # Delivered between our cancel and the broker's answer: back to the queue at once
            # for another consumer, rather than started while the process shuts down.
            await message.nack(requeue=True)
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._handle(message)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        """Handles the message in a span child of the publish it came from (when traced)."""
        with tracing.message_span(tracing.traceparent_in(message.headers), "process",
                                  str(message.type), str(message.message_id), self.queue):
            await self._handle_traced(message)

    async def _handle_traced(self, message: AbstractIncomingMessage) -> None:
        try:
            event = parse(message, self._subscription)
        except Malformed as exc:
            await self._dead_letter(message, str(exc))
            return
        try:
            await self._apply_once_the_database_answers(event)
        except _Stopping:
            await message.nack(requeue=True)  # for an instance that goes on
        except Exception as exc:
            await self._retry_or_dead_letter(message, exc)
        else:
            await message.ack()
            EVENTS_CONSUMED.labels(self.queue).inc()

    async def _apply_once_the_database_answers(self, event: IncomingEvent) -> None:
        """Applies the event. While the database cannot serve (is_transient), the message is
        no cause: it is kept, unacknowledged, and applied again after a pause, until the
        database answers or this consumer stops."""
        backoff = Backoff(first=self._settings.consumer_retry_delay_seconds)
        while True:
            try:
                await self._apply(event)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if backoff.next_pause == self._settings.consumer_retry_delay_seconds:
                    log.warning("database unavailable; event kept until it answers",
                                extra={"queue": self.queue})
            if self._stopping:
                raise _Stopping()
            await backoff.pause()

    async def _apply(self, event: IncomingEvent) -> None:
        handler = self._subscription.handlers[event.type]
        if handler.apply_many is not None:
            try:
                await self._batches[handler.apply_many].add(event)
                return
            except Exception as exc:
                if is_transient(exc):
                    raise
                # One event of the batch is at fault, or none is: each is applied on its own
                # below, so only a culprit is retried or dead-lettered.
        async with self._pool.acquire() as conn:
            if handler.deduplicates_itself:
                await handler.apply(conn, event)
                return
            async with conn.transaction():
                first_time = await conn.fetchval(
                    """
                    INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)
                    ON CONFLICT DO NOTHING RETURNING true
                    """,
                    self.queue, event.id, event.type,
                )
                if first_time:
                    await handler.apply(conn, event)

    async def _retry_or_dead_letter(self, message: AbstractIncomingMessage, exc: Exception) -> None:
        retries = int((message.headers or {}).get(RETRIES_HEADER, 0))
        reason = f"{type(exc).__name__}: {exc}"
        if retries >= self._settings.consumer_max_retries:
            await self._dead_letter(message, f"failed {retries + 1} times; last: {reason}")
            return
        delay = self._settings.consumer_retry_delay_seconds * 2**retries
        log.warning(
            "event failed; retrying",
            extra={"queue": self.queue, "retries": retries + 1, "reason": reason},
        )
        await self._republish(message, RETRY, {RETRIES_HEADER: retries + 1}, expiration=delay)
        await message.ack()
        EVENTS_RETRIED.labels(self.queue).inc()

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        log.error("event dead-lettered", extra={"queue": self.queue, "reason": reason})
        await self._republish(message, DEAD, {REASON_HEADER: reason})
        await message.ack()
        EVENTS_DEAD_LETTERED.labels(self.queue).inc()

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        to: str,
        headers: dict[str, Any],
        expiration: float | None = None,
    ) -> None:
        """A copy into the retry queue or the DLQ (`to`: RETRY or DEAD), confirmed before the
        original is acked: at least once."""
        assert self._publisher is not None
        copy = copy_of(message, {**(message.headers or {}), **headers}, expiration)
        await self._publisher.publish(copy, routing_key=to)


def copy_of(
    message: AbstractIncomingMessage, headers: dict[str, Any], expiration: float | None = None
) -> aio_pika.Message:
    """The same event (body, id, type, origin) as a new persistent message."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
    )
