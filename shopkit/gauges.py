"""Gauges a service reads from its app when scraped (shopkit.operator): its consumers' queues,
their dead letters, whether each consumer runs, and its readiness.

Nothing is counted between scrapes: RabbitMQ is asked how many messages wait, by the passive
declare the operations panel uses too (shopkit.broker.count_messages), once per scrape. The app's
keys are passed in by shopkit.app, which defines them (importing it here would be circular).
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from shopkit.broker import Broker, BrokerUnavailable
from shopkit.metrics import CONSUMER_LAG, CONSUMER_RUNNING, DEAD_LETTERS, READY, Refresh
from shopkit.operations import PART_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from shopkit.consumer import Consumer, Subscription

Checks = Callable[[web.Application], Awaitable[Mapping[str, str]]]


def event_gauges(
    broker_key: web.AppKey[Broker],
    subscriptions_key: web.AppKey[tuple],
    consumers_key: web.AppKey[list],
) -> Refresh:
    """For each of the app's subscriptions: the messages waiting in its queue (the consumers'
    lag) and in its dead-letter queue, and whether this instance consumes from it. Every
    instance of a service reports the same queues' counts; alerts take the max by queue."""

    async def refresh(app: web.Application) -> None:
        subscriptions: tuple[Subscription, ...] = app[subscriptions_key]
        consumers: list[Consumer] = app[consumers_key]
        for subscription in subscriptions:
            running = any(c.is_consuming for c in consumers if c.queue == subscription.queue)
            CONSUMER_RUNNING.labels(subscription.queue).set(1 if running else 0)
        broker = app[broker_key]
        counts = await asyncio.gather(*(
            messages_in(broker, queue)
            for subscription in subscriptions
            for queue in (subscription.queue, subscription.dead_letters)
        ))
        for subscription, lag, dead in zip(subscriptions, counts[::2], counts[1::2], strict=True):
            # A count RabbitMQ could not give keeps its last value, as the outbox gauges do:
            # readiness says the broker is down meanwhile.
            if lag is not None:
                CONSUMER_LAG.labels(subscription.queue).set(lag)
            if dead is not None:
                DEAD_LETTERS.labels(subscription.queue).set(dead)

    return refresh


async def messages_in(broker: Broker, queue: str) -> int | None:
    """How many messages wait in `queue`, or None when RabbitMQ cannot tell within
    PART_TIMEOUT_SECONDS: for a scrape and for the operations panel alike."""
    try:
        async with asyncio.timeout(PART_TIMEOUT_SECONDS):
            return await broker.count_messages(queue)
    except (BrokerUnavailable, TimeoutError):
        return None


def readiness_gauge(component: str, checks: Checks) -> Refresh:
    """1 when every check `/health/ready` makes (`checks`, the same function) is "ok"."""

    async def refresh(app: web.Application) -> None:
        states = await checks(app)
        READY.labels(component).set(1 if all(s == "ok" for s in states.values()) else 0)

    return refresh
