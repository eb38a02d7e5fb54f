"""The queues the bootstrap declares, on the real RabbitMQ: quorum queues, a delivery limit that
ends a poison message's loop, the move of an earlier version's classic queues that loses no
message, and a connection that finds a live node past a dead one."""

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shopkit.broker import connect_to_a_node, node_urls
from shopkit.consumer import DEAD, RETRIES_HEADER, RETRY, EventData, EventHandler, Subscription
from shopkit.events import EXCHANGE
from shopkit.topology import DEAD_LETTER_EXCHANGE, DELIVERY_LIMIT, declare_all
from tests.harness import RABBITMQ_URL, TEST_VHOST, _rabbitmqctl, eventually


async def _ignore(*_: object) -> None:
    return None


@pytest.fixture
async def subscription() -> AsyncIterator[Subscription]:
    """A subscription of its own, for one event type of its own; its queues go afterwards."""
    name = f"test.topology.{uuid.uuid4().hex[:8]}"
    event_type = f"test.{name}"
    yield Subscription(name, {event_type: EventHandler(EventData, _ignore)})
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for suffix in ("", ".retry", ".dlq", ".moving", ".dlq.moving"):
            await channel.queue_delete(f"{name}{suffix}")
        await channel.exchange_delete(f"{name}.requeue")


async def _queue_types() -> dict[str, str]:
    output = await _rabbitmqctl(
        "list_queues", "-p", TEST_VHOST, "-q", "--no-table-headers", "name", "type"
    )
    return dict(line.split() for line in output.splitlines() if line.strip())


async def _publish(channel: aio_pika.abc.AbstractChannel, queue: str, body: bytes,
                   **properties: object) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         **properties),  # type: ignore[arg-type]
        routing_key=queue,
    )


async def _take_all(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[
    aio_pika.abc.AbstractIncomingMessage
]:
    declared = await channel.get_queue(queue)
    taken = []
    while (message := await declared.get(no_ack=True, fail=False)) is not None:
        taken.append(message)
    return taken


async def test_every_queue_of_a_subscription_is_a_quorum_queue(
    subscription: Subscription,
) -> None:
    await declare_all(RABBITMQ_URL, [subscription])
    types = await _queue_types()
    for name in (subscription.queue, subscription.retries, subscription.dead_letters):
        assert types[name] == "quorum", name


async def test_a_message_no_consumer_settles_goes_to_the_dlq_at_the_delivery_limit(
    subscription: Subscription,
) -> None:
    """A consumer that dies on a message each time (its channel closes with the message
    unacknowledged) does not loop on it for ever: RabbitMQ dead-letters it."""
    await declare_all(RABBITMQ_URL, [subscription])
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await _publish(channel, subscription.queue, b"poison")
        deliveries = 0
        while True:
            dying = await connection.channel()
            queue = await dying.get_queue(subscription.queue)
            message = await queue.get(no_ack=False, fail=False)
            await dying.close()  # unacknowledged: back to the queue, one delivery spent
            if message is None:
                break
            deliveries += 1
            assert deliveries <= DELIVERY_LIMIT + 1
        assert deliveries == DELIVERY_LIMIT + 1

        async def dead_lettered() -> list[aio_pika.abc.AbstractIncomingMessage]:
            return await _take_all(channel, subscription.dead_letters)

        (dead,) = await eventually(dead_lettered)
        assert dead.body == b"poison"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"


async def test_the_classic_queues_of_an_earlier_version_become_quorum_queues_keeping_every_message(
    subscription: Subscription,
) -> None:
    (event_type,) = subscription.handlers
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await _declare_classic_topology(channel, subscription, event_type)
        await _publish(channel, subscription.queue, b"waiting", message_id="1",
                       headers={"x-request-id": "r1"})
        await _publish(channel, subscription.retries, b"retrying", message_id="2",
                       headers={RETRIES_HEADER: 1}, expiration=3600)
        await _publish(channel, subscription.dead_letters, b"dead", message_id="3")

        await declare_all(RABBITMQ_URL, [subscription])

        types = await _queue_types()
        for name in (subscription.queue, subscription.retries, subscription.dead_letters):
            assert types[name] == "quorum", name
        assert f"{subscription.queue}.moving" not in types
        assert f"{subscription.dead_letters}.moving" not in types
        queued = {m.body: m for m in await _take_all(channel, subscription.queue)}
        # What waited to be retried is retried now, with its count of retries.
        assert set(queued) == {b"waiting", b"retrying"}
        assert queued[b"waiting"].message_id == "1"
        assert queued[b"waiting"].headers["x-request-id"] == "r1"
        assert queued[b"retrying"].headers[RETRIES_HEADER] == 1
        assert [m.body for m in await _take_all(channel, subscription.dead_letters)] == [b"dead"]

        # The routes lead to the new queues.
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(aio_pika.Message(b"new"), routing_key=event_type)
        requeue = await channel.get_exchange(subscription.requeue_exchange)
        await requeue.publish(aio_pika.Message(b"to retry", expiration=0.05), routing_key=RETRY)
        await requeue.publish(aio_pika.Message(b"to the dlq"), routing_key=DEAD)

        bodies: list[bytes] = []

        async def both_arrived() -> bool:
            bodies.extend(m.body for m in await _take_all(channel, subscription.queue))
            return {b"new", b"to retry"} <= set(bodies)

        await eventually(both_arrived)
        assert [m.body for m in await _take_all(channel, subscription.dead_letters)] == [
            b"to the dlq"
        ]


async def _declare_classic_topology(
    channel: aio_pika.abc.AbstractChannel, subscription: Subscription, event_type: str
) -> None:
    """The queues as the shop's earlier versions declared them: classic."""
    events = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    requeue = await channel.declare_exchange(
        subscription.requeue_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(subscription.dead_letters, durable=True)
    await dlq.bind(dead, routing_key=subscription.queue)
    await dlq.bind(requeue, routing_key=DEAD)
    retry = await channel.declare_queue(subscription.retries, durable=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": subscription.queue,
    })
    await retry.bind(requeue, routing_key=RETRY)
    queue = await channel.declare_queue(subscription.queue, durable=True, arguments={
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": subscription.queue,
    })
    await queue.bind(events, routing_key=event_type)
    assert (await _queue_types())[subscription.queue] == "classic"


def test_a_rabbitmq_url_may_name_several_nodes() -> None:
    assert node_urls("amqp://u:p@h1:5672,h2:5673/shop?heartbeat=10") == [
        "amqp://u:p@h1:5672/shop?heartbeat=10", "amqp://u:p@h2:5673/shop?heartbeat=10",
    ]
    assert node_urls("amqp://u:p@h1/shop,amqp://u:p@h2/shop") == [
        "amqp://u:p@h1/shop", "amqp://u:p@h2/shop",
    ]
    with pytest.raises(ValueError):
        node_urls("h1:5672")


async def test_a_connection_goes_past_a_node_that_is_down() -> None:
    dead_then_live = RABBITMQ_URL.replace("@127.0.0.1:5672", "@127.0.0.1:1,127.0.0.1:5672")
    assert len(node_urls(dead_then_live)) == 2
    connection = await connect_to_a_node(dead_then_live, "test")
    assert not connection.is_closed
    await connection.close()
