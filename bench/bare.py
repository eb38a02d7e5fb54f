"""Bare ceilings: the least a program built from the shop's own libraries (aiohttp, asyncpg,
aio-pika, uvloop, orjson) can spend on the I/O of an operation, measured by `make bench` in
the same run as the shop. No logging, no auth, no validation beyond not crashing.

`python -m bench.bare proxy --port P --upstream http://127.0.0.1:U`
    The bare proxy hop, what the gateway is compared with: every request (method, path and
    query, body, headers but the hop-by-hop ones and those aiohttp sets itself) goes to the
    upstream through one shared keep-alive ClientSession, and its status, body and
    Content-Type come back. Event streams are passed on chunk by chunk.

`python -m bench.bare orders --port P --database DSN --rabbitmq URL [--linger-ms N]`
    The bare order pipeline, in one process, on schema `bare` of DSN (dropped and made again
    at start; a superuser's DSN) and on exchange `bare.events` with quorum queues
    `bare.orders` and `bare.status` (emptied at start) of the vhost URL names:
    - POST /orders: one statement, so one round trip and its own transaction (a
      data-modifying CTE, as the shop places orders): takes the stock if there is enough,
      writes the order and its outbox row, or nothing (409).
    - The relay, woken in-process when a request wrote an outbox row (as shopkit.outbox is,
      no NOTIFY; a 1 s poll besides): deletes up to a batch of rows with FOR UPDATE SKIP
      LOCKED, publishes them all at once over one channel with publisher confirms, and
      commits once every confirm is in. A failed publish rolls the batch back: at least
      once, as the shop's relay. (Deleted rather than marked: less than the shop does.)
    - The consumer of `bare.orders` (prefetch 100; it gets status changes too, as tracking
      does): whatever was delivered while the last
      batch was applied is the next batch, applied in one upsert (unnest) and acked with
      one multiple ack, as shopkit.consumer's batches are.
    - POST /orders/{id}/status: one statement moves the order and writes its event, which
      the relay publishes to `bare.status`.
    - The consumer of `bare.status`, batched likewise: one statement per batch inserts the
      notifications and sends one pg_notify each (at its commit), as the notifications
      service does per event.
    - GET /stream/{user_id}: Server-Sent Events. One LISTEN connection per process hands each
      notice to the streams of its user; the notice carries what the stream shows, so unlike
      the shop's hub nothing is read back.
    The levers are the shop's own: prepared statements (asyncpg's statement cache) planned
    once (force_generic_plan), pool connections released without asyncpg's reset query,
    uvloop, the garbage collector tuned as shopkit.tuning does, batches whatever their size
    under load. So what it costs is what the shop's I/O costs with nothing around it: a fair
    ceiling. (`--linger-ms N` makes the relay and the consumers wait N ms once woken, for
    bigger batches: a lever the shop does not use, there to show what it would give.)

Ready: `orders` answers GET /health with 200 once its schema, queues, pool, listener and
consumers are set up (it listens only then); `proxy` answers as soon as it listens.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import uvloop
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from shopkit.db import StatelessConnection
from shopkit.tuning import POSTGRES_SESSION, tune_garbage_collector

ORDER_CREATED, ORDER_STATUS = "order.created", "order.status"
EXCHANGE = "bare.events"
# As in the shop, a status change reaches both consumers: tracking's and the notifications'.
QUEUES = {"bare.orders": (ORDER_CREATED, ORDER_STATUS), "bare.status": (ORDER_STATUS,)}
NOTICE_CHANNEL = "bare_stream"
BATCH = 100  # the relay's batch, the consumers' prefetch and largest batch
POLL_SECONDS = 1.0  # the relay's poll, for rows no wake-up announced
POOL_SIZE = 10
PUBLISH_TIMEOUT_SECONDS = 5.0
PAUSE_AFTER_FAILURE_SECONDS = 0.5
JSON = "application/json"
END_OF_STREAM = b""

# Hop-by-hop headers (RFC 9110 §7.6.1), and those aiohttp's client sets from what it sends:
# the body's length, and its encoding (aiohttp's server hands the body over decoded).
NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection", "host", "content-length",
    "content-encoding",
})

SCHEMA = """
    DROP SCHEMA IF EXISTS bare CASCADE;
    CREATE SCHEMA bare;
    CREATE TABLE bare.products (id uuid PRIMARY KEY, stock int NOT NULL CHECK (stock >= 0));
    CREATE TABLE bare.orders (
        id uuid PRIMARY KEY, user_id uuid NOT NULL, product_id uuid NOT NULL,
        quantity int NOT NULL, status text NOT NULL, version int NOT NULL);
    CREATE TABLE bare.outbox (
        id bigserial PRIMARY KEY, routing_key text NOT NULL, body bytea NOT NULL);
    CREATE TABLE bare.trackings (
        order_id uuid PRIMARY KEY, status text NOT NULL, version int NOT NULL);
    CREATE TABLE bare.notifications (
        id bigserial PRIMARY KEY, user_id uuid NOT NULL, order_id uuid NOT NULL,
        status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""
# The stock is checked again on the row's latest version if a concurrent order changed it
# (READ COMMITTED re-evaluates the WHERE), so it never goes below what was ordered.
PLACE_ORDER = """
    WITH taken AS (
        UPDATE products SET stock = stock - $4 WHERE id = $3 AND stock >= $4 RETURNING id
    ), placed AS (
        INSERT INTO orders (id, user_id, product_id, quantity, status, version)
        SELECT $1, $2, id, $4, 'placed', 1 FROM taken RETURNING id
    ), event AS (
        INSERT INTO outbox (routing_key, body) SELECT $5, $6 FROM placed
    )
    SELECT count(*) FROM placed
"""
# The event names the order's owner, which only the row knows: it is made here.
MOVE_ORDER = """
    WITH moved AS (
        UPDATE orders SET status = $2, version = version + 1 WHERE id = $1
        RETURNING id, user_id, status, version
    ), event AS (
        INSERT INTO outbox (routing_key, body)
        SELECT $3, convert_to(json_build_object('orderId', id, 'userId', user_id,
                                                'status', status, 'version', version)::text,
                              'UTF8')
        FROM moved
    )
    SELECT version FROM moved
"""
# Deleted in the relay's transaction: the rows stay locked, and come back if it rolls back.
CLAIM = """
    WITH claimed AS (
        SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    ), taken AS (
        DELETE FROM outbox USING claimed WHERE outbox.id = claimed.id
        RETURNING outbox.id, outbox.routing_key, outbox.body
    )
    SELECT routing_key, body FROM taken ORDER BY id
"""
# An upsert touches a row once per statement: one event per order, its newest.
FOLLOW = """
    INSERT INTO trackings (order_id, status, version)
    SELECT DISTINCT ON (order_id) order_id, status, version
    FROM unnest($1::uuid[], $2::text[], $3::int[]) AS given(order_id, status, version)
    ORDER BY order_id, version DESC
    ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version
    WHERE trackings.version < excluded.version
"""
# Run on its own, one transaction: the notices go out at its commit.
NOTIFY = """
    WITH added AS (
        INSERT INTO notifications (user_id, order_id, status)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])
        RETURNING user_id, order_id, status
    )
    SELECT pg_notify($4, user_id || ':' || order_id || ':' || status) FROM added
"""
# The shop's planning (every statement planned once), on the bare schema.
SESSION = {"search_path": "bare", **POSTGRES_SESSION}


def complain(what: str, exc: BaseException) -> None:
    """Failures only (no logging otherwise): a bench that stalls should say why."""
    print(f"bench.bare: {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


# The proxy ------------------------------------------------------------------------------------

SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


def proxy_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")

    async def client(app: web.Application) -> AsyncIterator[None]:
        # No ceiling worth the name on pooled connections (aiohttp's default is 100 in all).
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        ) as session:
            app[SESSION_KEY] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        url = URL(base + request.rel_url.raw_path_qs, encoded=True)
        try:
            async with request.app[SESSION_KEY].request(
                request.method, url, data=body or None, headers=_forwarded(request.headers),
                allow_redirects=False,
            ) as upstream:
                headers = _answer_headers(upstream)
                if headers.get("Content-Type", "").startswith("text/event-stream"):
                    return await _relay(request, upstream, headers)
                payload = await upstream.read()
        except aiohttp.ClientError:
            return web.Response(status=502)
        return web.Response(status=upstream.status, body=payload, headers=headers)

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


def _forwarded(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    dropped = NOT_FORWARDED
    if "Connection" in headers:  # and whatever it names
        named = {n.strip().lower() for v in headers.getall("Connection") for n in v.split(",")}
        dropped = dropped | named
    return [(name, value) for name, value in headers.items() if name.lower() not in dropped]


def _answer_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    headers = {}
    for name in ("Content-Type", "Content-Encoding"):  # the body as the upstream encoded it
        value = upstream.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    return response


# The order pipeline -------------------------------------------------------------------------

Apply = Callable[[asyncpg.Pool, list[bytes]], Awaitable[None]]


async def follow(pool: asyncpg.Pool, bodies: list[bytes]) -> None:
    events = [orjson.loads(body) for body in bodies]
    await pool.execute(FOLLOW, [e["orderId"] for e in events], [e["status"] for e in events],
                       [e["version"] for e in events])


async def notify(pool: asyncpg.Pool, bodies: list[bytes]) -> None:
    events = [orjson.loads(body) for body in bodies]
    await pool.execute(NOTIFY, [e["userId"] for e in events], [e["orderId"] for e in events],
                       [e["status"] for e in events], NOTICE_CHANNEL)


class Batches:
    """A queue's consumer: what was delivered while a batch was applied is the next batch, so
    nothing waits for a batch to fill, and under load one statement and one ack serve many.
    One consumer per channel, batches in delivery order: a multiple ack of a batch's last
    message acks exactly that batch."""

    def __init__(self, pool: asyncpg.Pool, apply: Apply, linger: float) -> None:
        self._pool = pool
        self._apply = apply
        self._linger = linger
        self._pending: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()

    async def take(self, message: AbstractIncomingMessage) -> None:
        self._pending.append(message)
        self._arrived.set()

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            if self._linger:
                await asyncio.sleep(self._linger)
            self._arrived.clear()
            while self._pending:
                batch = self._pending[:BATCH]
                del self._pending[:BATCH]
                await self._settle(batch)

    async def _settle(self, batch: list[AbstractIncomingMessage]) -> None:
        try:
            await self._apply(self._pool, [message.body for message in batch])
        except Exception as exc:
            complain("a batch", exc)
            await batch[-1].nack(multiple=True, requeue=True)
            await asyncio.sleep(PAUSE_AFTER_FAILURE_SECONDS)
            return
        await batch[-1].ack(multiple=True)


class Pipeline:
    """What the `orders` process holds: its pool, listener, broker, tasks and streams."""

    def __init__(self, database: str, rabbitmq: str, linger: float) -> None:
        self._database = database
        self._rabbitmq = rabbitmq
        self._linger = linger
        self._woken = asyncio.Event()
        # Per user id (as Postgres writes it), the queues of their open streams' events.
        self._streams: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Made by `run`, before the first request.
        self._pool: asyncpg.Pool
        self._exchange: AbstractExchange

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """Sets everything up before the server listens; takes it down after."""
        async with contextlib.AsyncExitStack() as stack:
            await self._make_schema()
            self._pool = await asyncpg.create_pool(
                self._database, min_size=POOL_SIZE, max_size=POOL_SIZE,
                connection_class=StatelessConnection, server_settings=SESSION,
                # Connections are never closed for idleness: no timer set at every release.
                max_inactive_connection_lifetime=0,
            )
            stack.push_async_callback(self._pool.close)
            listener = await asyncpg.connect(self._database, server_settings=SESSION)
            stack.push_async_callback(listener.close)
            await listener.add_listener(NOTICE_CHANNEL, self._on_notice)
            connection = await aio_pika.connect(self._rabbitmq)
            stack.push_async_callback(connection.close)
            self._exchange = await self._declare(connection)
            for queue, apply in (("bare.orders", follow), ("bare.status", notify)):
                await self._consume(connection, queue, apply)
            self._tasks.append(asyncio.create_task(self._relay()))
            stack.push_async_callback(self._stop_tasks)
            yield

    async def _make_schema(self) -> None:
        conn = await asyncpg.connect(self._database)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()

    async def _declare(self, connection: aio_pika.abc.AbstractConnection) -> AbstractExchange:
        """The exchange and the quorum queues, emptied of an earlier run's messages; the
        exchange as the relay's confirming channel knows it."""
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        for name, routing_keys in QUEUES.items():
            await channel.queue_delete(name)
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            for routing_key in routing_keys:
                await queue.bind(EXCHANGE, routing_key=routing_key)
        await channel.close()
        publishing = await connection.channel(publisher_confirms=True)
        return await publishing.get_exchange(EXCHANGE)

    async def _consume(
        self, connection: aio_pika.abc.AbstractConnection, name: str, apply: Apply
    ) -> None:
        # A channel each: a multiple ack covers one channel's deliveries.
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=BATCH)
        batches = Batches(self._pool, apply, self._linger)
        self._tasks.append(asyncio.create_task(batches.run()))
        queue = await channel.get_queue(name)
        await queue.consume(batches.take)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # The relay

    def wake(self) -> None:
        """A request committed an outbox row."""
        self._woken.set()

    async def _relay(self) -> None:
        while True:
            try:
                published = await self._publish_batch()
            except Exception as exc:
                complain("the relay", exc)
                await asyncio.sleep(PAUSE_AFTER_FAILURE_SECONDS)
                continue
            if published < BATCH:  # else more are likely waiting
                # A wake-up during the pass just made is kept: its row may have been missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._woken.wait()
                if self._linger:
                    await asyncio.sleep(self._linger)
                self._woken.clear()

    async def _publish_batch(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM, BATCH)
            if rows:
                await asyncio.gather(*(
                    self._exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=routing_key, timeout=PUBLISH_TIMEOUT_SECONDS,
                    )
                    for routing_key, body in rows
                ))
        return len(rows)

    # The streams

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        streams = self._streams.get(payload[:36])
        if not streams:
            return
        _, order_id, status = payload.split(":", 2)
        event = b"data: " + orjson.dumps({"orderId": order_id, "status": status}) + b"\n\n"
        for pushes in streams:
            pushes.put_nowait(event)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        try:
            user = str(uuid.UUID(request.match_info["user_id"]))
        except ValueError:
            return web.Response(status=400)
        pushes: asyncio.Queue[bytes] = asyncio.Queue()
        streams = self._streams.setdefault(user, set())
        streams.add(pushes)
        try:
            # Subscribed before the headers go: a client that has them misses nothing.
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                while event := await pushes.get():
                    await response.write(event)
            return response
        finally:
            streams.discard(pushes)
            if not streams:
                self._streams.pop(user, None)

    async def end_streams(self, _app: web.Application) -> None:
        """On shutdown, before aiohttp waits for the requests in flight."""
        for streams in self._streams.values():
            for pushes in streams:
                pushes.put_nowait(END_OF_STREAM)

    # The requests

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def add_products(self, request: web.Request) -> web.Response:
        given = orjson.loads(await request.read())
        ids = [str(uuid.uuid4()) for _ in range(int(given["count"]))]
        await self._pool.execute(
            "INSERT INTO products (id, stock) SELECT unnest($1::uuid[]), $2",
            ids, int(given["stock"]),
        )
        return json_response({"ids": ids}, 201)

    async def place_order(self, request: web.Request) -> web.Response:
        given = orjson.loads(await request.read())
        order_id = str(uuid.uuid4())
        quantity = int(given["quantity"])
        event = orjson.dumps({
            "orderId": order_id, "userId": given["userId"], "productId": given["productId"],
            "quantity": quantity, "status": "placed", "version": 1,
        })
        placed = await self._pool.fetchval(
            PLACE_ORDER, order_id, given["userId"], given["productId"], quantity,
            ORDER_CREATED, event,
        )
        if not placed:
            return json_response({"error": "out_of_stock"}, 409)
        self.wake()
        return json_response({"id": order_id}, 201)

    async def move_order(self, request: web.Request) -> web.Response:
        given = orjson.loads(await request.read())
        order_id = request.match_info["order_id"]
        version = await self._pool.fetchval(
            MOVE_ORDER, order_id, str(given["status"]), ORDER_STATUS
        )
        if version is None:
            return json_response({"error": "not_found"}, 404)
        self.wake()
        return json_response({"id": order_id, "status": given["status"], "version": version})

    async def tracked(self, request: web.Request) -> web.Response:
        found = await self._pool.fetchval(
            "SELECT true FROM trackings WHERE order_id = $1", request.match_info["order_id"]
        )
        return web.Response(status=200 if found else 404)


def orders_app(database: str, rabbitmq: str, linger: float = 0.0) -> web.Application:
    pipeline = Pipeline(database, rabbitmq, linger)
    app = web.Application()
    app.cleanup_ctx.append(pipeline.run)
    app.on_shutdown.append(pipeline.end_streams)
    app.router.add_get("/health", pipeline.health)
    app.router.add_post("/products", pipeline.add_products)
    app.router.add_post("/orders", pipeline.place_order)
    app.router.add_get("/orders/{order_id}/tracked", pipeline.tracked)
    app.router.add_post("/orders/{order_id}/status", pipeline.move_order)
    app.router.add_get("/stream/{user_id}", pipeline.stream)
    return app


# Running ------------------------------------------------------------------------------------


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serves until SIGTERM or SIGINT. Set-up (the app's cleanup contexts) is done before the
    port listens, so whatever answers is ready."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # A request ends when its client goes (a stream too); a stop waits 1 s for the rest.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        tune_garbage_collector()
        await stopping.wait()
    finally:
        await runner.cleanup()


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    proxy = modes.add_parser("proxy", help="the bare proxy hop")
    proxy.add_argument("--upstream", required=True, help="http://host:port")
    orders = modes.add_parser("orders", help="the bare order pipeline")
    orders.add_argument("--database", required=True, help="a superuser's Postgres DSN")
    orders.add_argument("--rabbitmq", required=True, help="amqp://user:password@host:port/vhost")
    orders.add_argument(
        "--linger-ms", type=float, default=0.0,
        help="how long the relay and the consumers wait, once woken, for more to batch "
             "(default 0: none, as the shop)",
    )
    for mode in (proxy, orders):
        mode.add_argument("--port", type=int, required=True)
        mode.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    if args.mode == "proxy":
        app = proxy_app(args.upstream)
    else:
        app = orders_app(args.database, args.rabbitmq, args.linger_ms / 1000)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
