"""The exchanges, queues and bindings of every subscription: the bootstrap's part, done with
the broker's administrator (a component's own user may configure nothing).

Every queue is a quorum queue, replicated over the cluster's nodes:
- `<queue>`: bound to `shop.events` for its event types. A message delivered DELIVERY_LIMIT
  times without being settled (a consumer that dies on it each time) is dead-lettered into the
  DLQ by RabbitMQ itself; the consumer's own retries (shopkit.consumer) are counted apart.
- `<queue>.retry`: a message waits out its per-message TTL there, then goes back to `<queue>`.
- `<queue>.dlq`: where a message that cannot be processed ends.
Dead-lettering out of the first two is at least once: RabbitMQ keeps a message in its queue
until the queue it goes to confirmed it.

A queue that exists with other arguments (a classic queue of an earlier version of the shop,
or a quorum queue with another delivery limit) cannot be changed in place: `declare_topology`
moves it, losing no message (`_hold`, `_return_held`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from shopkit.broker import connect_to_a_node
from shopkit.consumer import DEAD, RETRY, Subscription, copy_of
from shopkit.events import EXCHANGE

DEAD_LETTER_EXCHANGE = "shop.dead-letter"
DELIVERY_LIMIT = 20
_QUORUM = {"x-queue-type": "quorum"}
# At-least-once dead-lettering needs a queue that refuses publishes when full rather than drop
# its oldest; these queues have no length limit, so nothing is ever refused for that.
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing key)


def queues_of(subscription: Subscription) -> tuple[QueueSpec, QueueSpec, QueueSpec]:
    """The subscription's queue, retry queue and DLQ, as they must be."""
    queue = subscription.queue
    return (
        QueueSpec(queue, {
            **_QUORUM, "x-delivery-limit": DELIVERY_LIMIT, **_AT_LEAST_ONCE,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE, "x-dead-letter-routing-key": queue,
        }, tuple((EXCHANGE, event_type) for event_type in subscription.handlers)),
        QueueSpec(subscription.retries, {
            **_QUORUM, **_AT_LEAST_ONCE,
            # The default exchange, by the queue's name: straight back to the queue.
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue,
        }, ((subscription.requeue_exchange, RETRY),)),
        QueueSpec(subscription.dead_letters, dict(_QUORUM), (
            (DEAD_LETTER_EXCHANGE, queue), (subscription.requeue_exchange, DEAD),
        )),
    )


def declared(subscriptions: Sequence[Subscription]) -> tuple[set[str], set[str]]:
    """The queues and the exchanges `declare_all` declares for these subscriptions: what of
    a vhost is the shop's."""
    queues = {spec.name for s in subscriptions for spec in queues_of(s)}
    exchanges = {EXCHANGE, DEAD_LETTER_EXCHANGE, *(s.requeue_exchange for s in subscriptions)}
    return queues, exchanges


@dataclass(frozen=True)
class _Hold:
    """Where the messages of `sources` wait while those queues are made again, and the routes
    to them lead meanwhile; they go to `returns_to` afterwards."""

    name: str
    returns_to: str
    sources: tuple[QueueSpec, ...]

    @property
    def bindings(self) -> list[tuple[str, str]]:
        return [binding for source in self.sources for binding in source.bindings]


def _holds(subscription: Subscription) -> list[_Hold]:
    queue, retries, dead_letters = queues_of(subscription)
    return [
        # The retry queue first: what waits there is retried at once, in the queue, so nothing
        # is dead-lettered back into the queue (by its name) while the queue is away.
        _Hold(f"{queue.name}.moving", queue.name, (retries, queue)),
        _Hold(f"{dead_letters.name}.moving", dead_letters.name, (dead_letters,)),
    ]


async def declare_all(url: str, subscriptions: Sequence[Subscription]) -> None:
    """Declares every subscription's queues and bindings up front, at deployment: an event
    published before its consumer first ran still has a queue to wait in."""
    connection = await connect_to_a_node(url, "bootstrap")
    try:
        for subscription in subscriptions:
            await declare_topology(connection, subscription)
    finally:
        await connection.close()


async def declare_topology(connection: AbstractConnection, subscription: Subscription) -> None:
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    await channel.declare_exchange(
        subscription.requeue_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    specs = queues_of(subscription)
    holds = _holds(subscription)
    if not await _declared_as_specified(connection, specs):
        await _hold(connection, channel, holds)
    # A channel of its own for each step: a channel that used a queue keeps what it knew of
    # it, and RabbitMQ's channel fails on a queue made again under that name as another type.
    await channel.close()
    channel = await connection.channel()
    for spec in specs:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for exchange, routing_key in spec.bindings:
            await queue.bind(exchange, routing_key=routing_key)
    await channel.close()
    channel = await connection.channel(publisher_confirms=True)
    await _return_held(connection, channel, holds)
    await channel.close()


async def _declared_as_specified(
    connection: AbstractConnection, specs: Sequence[QueueSpec]
) -> bool:
    """Declares each queue; False when one exists with other arguments. (RabbitMQ closes the
    channel of a declare that disagrees, so each has a channel of its own.)"""
    for spec in specs:
        channel = await connection.channel()
        try:
            await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            return False
        await channel.close()
    return True


async def _existing(
    connection: AbstractConnection, channel: AbstractChannel, name: str
) -> AbstractQueue | None:
    probe = await connection.channel()
    try:
        await probe.get_queue(name)  # passive: RabbitMQ closes the channel if there is none
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    await probe.close()
    return await channel.get_queue(name)


async def _hold(
    connection: AbstractConnection, channel: AbstractChannel, holds: Sequence[_Hold]
) -> None:
    """Routes every binding to its hold, then moves each queue's messages there and deletes
    the queue. A message routed to a queue before it lost its bindings is moved with the rest:
    the queue is deleted only once empty."""
    for hold in holds:
        held = await channel.declare_queue(hold.name, durable=True, arguments=_QUORUM)
        for exchange, routing_key in hold.bindings:
            await held.bind(exchange, routing_key=routing_key)
    for hold in holds:
        for source in hold.sources:
            queue = await _existing(connection, channel, source.name)
            if queue is None:
                continue
            for exchange, routing_key in source.bindings:
                await queue.unbind(exchange, routing_key=routing_key)
            await _empty_and_delete(connection, channel, queue, hold.name)


async def _return_held(
    connection: AbstractConnection, channel: AbstractChannel, holds: Sequence[_Hold]
) -> None:
    """Moves what a hold kept back into its queue, made again by now, and deletes the hold.
    Also finishes a move that an earlier run left half done."""
    for hold in holds:
        held = await _existing(connection, channel, hold.name)
        if held is None:
            continue
        for exchange, routing_key in hold.bindings:
            await held.unbind(exchange, routing_key=routing_key)
        await _empty_and_delete(connection, channel, held, hold.returns_to)


async def _empty_and_delete(
    connection: AbstractConnection, channel: AbstractChannel, queue: AbstractQueue, into: str
) -> None:
    """Moves the queue's messages into `into`, then deletes it once it is seen empty. Nothing
    routes to it any more (its bindings are gone, and nothing names it), so nothing arrives
    between the last look and the delete. (Quorum queues cannot be deleted "if empty".)"""
    while True:
        await _move_messages(channel, queue, into)
        probe = await connection.channel()
        left = await probe.declare_queue(queue.name, passive=True)
        if not left.declaration_result.message_count:
            await probe.queue_delete(queue.name)
            await probe.close()
            return
        await probe.close()


async def _move_messages(channel: AbstractChannel, queue: AbstractQueue, into: str) -> int:
    """Each message, copied into `into` (confirmed) before it is acked: at least once. A
    message's TTL is not copied: one waiting to be retried is retried now."""
    moved = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await channel.default_exchange.publish(
            copy_of(message, dict(message.headers or {})), routing_key=into
        )
        await message.ack()
        moved += 1
    return moved
