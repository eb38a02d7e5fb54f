"""The RabbitMQ connection of a component: connects in the background, publishes with confirms.

A component starts and serves whether or not RabbitMQ is up: the connection is made in the
background, and made again whenever it is lost, to any node of the cluster that answers
(`node_urls`). Readiness reports the broker as down meanwhile, and a publish fails fast with 503.
"""

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from shopkit import tracing
from shopkit.backoff import Backoff
from shopkit.errors import ServiceUnavailable
from shopkit.events import EXCHANGE

log = logging.getLogger("shopkit.broker")


class BrokerUnavailable(ServiceUnavailable):
    code, message = "service_unavailable", "The message broker is unavailable; try again shortly."


# Where one URL of a list ends: before the scheme of the next.
_NEXT_URL = re.compile(r",(?=amqps?://)")
_URL = re.compile(r"^(?P<scheme>amqps?://)(?P<user>[^@/]*@)?(?P<hosts>[^/?#]*)(?P<rest>.*)$")
CONNECT_TIMEOUT_SECONDS = 5
CHANNEL_CLOSE_TIMEOUT_SECONDS = 0.5


def node_urls(url: str) -> list[str]:
    """The nodes a RABBITMQ_URL names: several URLs separated by commas, or one URL whose host
    part lists several `host:port`s (`amqp://u:p@h1:5672,h2:5672,h3:5672/vhost`), each node
    then with the URL's user, virtual host and options."""
    urls = []
    for one in _NEXT_URL.split(url.strip()):
        match = _URL.match(one)
        if match is None or not match["hosts"]:
            raise ValueError("a RabbitMQ URL is amqp://user:password@host:port/vhost")
        for host in match["hosts"].split(","):
            urls.append(f"{match['scheme']}{match['user'] or ''}{host}{match['rest']}")
    return urls


def first_node(url: str) -> str:
    return node_urls(url)[0]


async def connect_to_a_node(url: str, name: str) -> AbstractConnection:
    """A connection to the first node of `url`, in the order given, that accepts one. A node
    that is down costs a refused connection, so a component whose node goes is on the next
    one at its next try. (Instances spread over the nodes by being given them in different
    orders, or through a load balancer's one address.) Raises the last node's failure when
    none accepts."""
    failure: Exception | None = None
    for node in node_urls(url):
        try:
            return await aio_pika.connect(
                node, timeout=CONNECT_TIMEOUT_SECONDS,
                client_properties={"connection_name": name},
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            log.info("rabbitmq node refused: %s", type(exc).__name__,
                     extra={"node": urlsplit(node).hostname, "port": urlsplit(node).port})
            failure = exc
    assert failure is not None
    raise failure


def closed_event(connection: AbstractConnection, *channels: AbstractChannel) -> asyncio.Event:
    """Set when the connection or one of its `channels` closes, whatever the cause."""
    closed = asyncio.Event()
    for closing in (connection, *channels):
        closing.close_callbacks.add(lambda *_: closed.set())
    return closed


async def count_messages(connection: AbstractConnection, queue: str) -> int:
    """How many messages wait in `queue` now, by a passive declare (which needs no right, and
    counts a quorum queue as it is now, unlike the management API's figures). On a channel of
    its own: RabbitMQ closes the channel of a declare that names no queue."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        # Bounded, also when the caller's own deadline cancelled the declare: a broker that
        # stopped answering must not hold the caller past it for long.
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHANNEL_CLOSE_TIMEOUT_SECONDS):
                    await channel.close()


@dataclass(frozen=True)
class OutgoingMessage:
    """An event as it goes on the wire: its id, type, JSON envelope, the request it came from
    and the trace that request was in (its writer's traceparent, None when not traced)."""

    event_id: str
    event_type: str
    body: bytes
    request_id: str | None
    traceparent: str | None = None


class Broker:
    def __init__(self, url: str, name: str, publish_timeout: float = 5.0) -> None:
        self._url = url
        self._name = name
        self._publish_timeout = publish_timeout
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._first_connected = asyncio.Event()

    @property
    def is_ready(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._exchange is not None
            and not self._exchange.channel.is_closed
        )

    def start(self) -> None:
        self._connecting = asyncio.create_task(self._stay_connected())

    async def _stay_connected(self) -> None:
        """Connects, to any node, and connects again whenever the connection or its channel
        is lost, until cancelled."""
        backoff = Backoff()
        while True:
            try:
                closed = await self._connect()
                backoff.succeeded()
                await closed.wait()
                log.warning("rabbitmq connection lost; reconnecting")
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("waiting for rabbitmq: %s", type(exc).__name__)
            self._exchange = None
            await self._close_connection()
            await backoff.pause()

    async def _connect(self) -> asyncio.Event:
        connection = await connect_to_a_node(self._url, self._name)
        self._connection = connection
        channel = await connection.channel(publisher_confirms=True)
        # Declared by the bootstrap; checked here (the component's user may not configure
        # anything, shopkit.broker_access).
        exchange = await channel.get_exchange(EXCHANGE)
        closed = closed_event(connection, channel)
        self._exchange = exchange
        self._first_connected.set()
        log.info("connected to rabbitmq")
        return closed

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            # Bounded, so a broker that never answers cannot hold us.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    await connection.close()

    async def first_connection(self) -> None:
        """Returns once the broker has connected for the first time."""
        await self._first_connected.wait()

    async def publish(self, outgoing: OutgoingMessage) -> None:
        """Returns once RabbitMQ confirmed the message (persisted, routed); raises
        BrokerUnavailable otherwise."""
        if not self.is_ready or self._exchange is None:
            raise BrokerUnavailable()
        headers = {"x-request-id": outgoing.request_id or ""}
        # The consumer's span is a child of the publish span current here (the relay's), or,
        # where this process traces nothing, of the writer's span itself.
        if parent := tracing.traceparent() or outgoing.traceparent:
            headers[tracing.TRACEPARENT] = parent
        message = aio_pika.Message(
            outgoing.body,
            message_id=outgoing.event_id,
            type=outgoing.event_type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._name,
            headers=headers,
        )
        try:
            await self._exchange.publish(
                message, routing_key=outgoing.event_type, mandatory=True,
                timeout=self._publish_timeout,
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable() from exc

    async def count_messages(self, queue: str) -> int:
        """How many messages wait in `queue` (count_messages), asked on this component's own
        connection; BrokerUnavailable when there is none, or the queue cannot be read."""
        connection = self._connection
        if not self.is_ready or connection is None:
            raise BrokerUnavailable()
        try:
            return await count_messages(connection, queue)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable() from exc

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        self._exchange = None
        await self._close_connection()
