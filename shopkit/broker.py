"""The RabbitMQ connection of a component: connects in the background, publishes with confirms.

A component starts and serves whether or not RabbitMQ is up: the connection is retried in the
background until it succeeds, after which aio-pika's robust connection reconnects on its own.
Readiness reports the broker as down meanwhile, and a publish fails fast with 503.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from shopkit.backoff import Backoff
from shopkit.errors import ServiceUnavailable
from shopkit.events import EXCHANGE

log = logging.getLogger("shopkit.broker")


class BrokerUnavailable(ServiceUnavailable):
    code, message = "service_unavailable", "The message broker is unavailable; try again shortly."


@dataclass(frozen=True)
class OutgoingMessage:
    """An event as it goes on the wire: its id, type, JSON envelope and the request it came from."""

    event_id: str
    event_type: str
    body: bytes
    request_id: str | None


class Broker:
    def __init__(self, url: str, name: str, publish_timeout: float = 5.0) -> None:
        self._url = url
        self._name = name
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
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
        self._connecting = asyncio.create_task(self._connect_until_ready())

    async def _connect_until_ready(self) -> None:
        backoff = Backoff()
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self._url, timeout=5, client_properties={"connection_name": self._name}
                )
                channel = await connection.channel(publisher_confirms=True)
                # Declared by the bootstrap; checked here (the component's user may not
                # configure anything, shopkit.broker_access).
                self._exchange = await channel.get_exchange(EXCHANGE)
                self._connection = connection
                self._first_connected.set()
                log.info("connected to rabbitmq")
                return
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("waiting for rabbitmq: %s", type(exc).__name__)
                await backoff.pause()

    async def first_connection(self) -> None:
        """Returns once the broker has connected for the first time."""
        await self._first_connected.wait()

    async def publish(self, outgoing: OutgoingMessage) -> None:
        """Returns once RabbitMQ confirmed the message (persisted, routed); raises
        BrokerUnavailable otherwise."""
        if not self.is_ready or self._exchange is None:
            raise BrokerUnavailable()
        message = aio_pika.Message(
            outgoing.body,
            message_id=outgoing.event_id,
            type=outgoing.event_type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._name,
            headers={"x-request-id": outgoing.request_id or ""},
        )
        try:
            await self._exchange.publish(
                message, routing_key=outgoing.event_type, mandatory=True,
                timeout=self._publish_timeout,
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable() from exc

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._connection is not None:
            # Bounded, so a broker that never answers cannot hold the shutdown.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._connection.close()
