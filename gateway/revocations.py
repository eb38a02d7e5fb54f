"""Every gateway instance hears every `auth.session_revoked`, and evicts that user's tokens.

Each instance binds a queue of its own (`gateway.revocations.<random>`, exclusive: it goes when
the connection goes) to `shop.events`, so the event reaches all instances, not one of them. The
gateway's RabbitMQ user may make such queues and bind them for this one event type, and publish
nothing (shopkit.broker_access). The connection is not a robust one: the listener has to know
the moment it goes deaf, because the cache must not be used while revocations could be missed
(gateway/tokens.py).
"""

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from gateway.tokens import TokenCache
from shopkit.backoff import Backoff
from shopkit.broker import connect_to_a_node
from shopkit.broker_access import GATEWAY_QUEUE_PREFIX
from shopkit.events import EXCHANGE, SESSION_REVOKED
from shopkit.metrics import REVOCATIONS_HEARD

log = logging.getLogger("gateway.revocations")

TOKEN_CACHE_KEY = web.AppKey("token_cache", TokenCache)


async def listen(url: str, cache: TokenCache) -> None:
    """Runs until cancelled, reconnecting with backoff whenever RabbitMQ goes away."""
    backoff = Backoff()
    while True:
        try:
            await _listen_once(url, cache)
            backoff.succeeded()
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("revocations unheard, token cache off: %s", type(exc).__name__)
        finally:
            cache.listening = False
        await backoff.pause()


async def _listen_once(url: str, cache: TokenCache) -> None:
    closed = asyncio.Event()
    connection = await connect_to_a_node(url, "gateway revocations")
    connection.close_callbacks.add(lambda *_: _deafened(cache, closed))
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(EXCHANGE)  # declared by the bootstrap
        queue = await channel.declare_queue(
            f"{GATEWAY_QUEUE_PREFIX}{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key=SESSION_REVOKED)
        await queue.consume(functools.partial(_on_revoked, cache), no_ack=True)
        # Whatever was revoked before this moment went unheard: start from nothing.
        cache.clear()
        cache.listening = True
        log.info("hearing revocations, token cache on")
        await closed.wait()
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):  # a broker that never answers must not hold us
                await connection.close()


def _deafened(cache: TokenCache, closed: asyncio.Event) -> None:
    cache.listening = False
    closed.set()


async def _on_revoked(cache: TokenCache, message: AbstractIncomingMessage) -> None:
    REVOCATIONS_HEARD.inc()  # an unreadable one too: it empties the cache
    try:
        user_id = UUID(orjson.loads(message.body)["data"]["userId"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # Unreadable, so whose tokens it meant is unknown: forget them all.
        log.warning("unreadable %s event; token cache emptied", SESSION_REVOKED)
        cache.clear()
        return
    cache.evict_users([user_id])


def token_cache(
    ttl_seconds: float, max_entries: int, rabbitmq_url: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context: a cache, and its listener for the app's lifetime (none when the
    cache is off)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cache = TokenCache(ttl_seconds, max_entries)
        app[TOKEN_CACHE_KEY] = cache
        if ttl_seconds <= 0:
            yield
            return
        task = asyncio.create_task(listen(rabbitmq_url, cache), name="revocations")
        yield
        task.cancel()
        await asyncio.wait({task}, timeout=10)

    return ctx
