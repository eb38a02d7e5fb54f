"""The one shape every service has: middlewares, identity check, pool, migrations, broker, health.

A service's app factory calls `service_app` and adds its own routes and background tasks.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TypeVar
from uuid import UUID

from aiohttp import web

from shopkit import db, errors
from shopkit.broker import Broker
from shopkit.consumer import Consumer, Subscription
from shopkit.gauges import event_gauges, messages_in, readiness_gauge
from shopkit.health import Health, live
from shopkit.identity import (
    IDENTITY_HEADER,
    Identity,
    IdentityKey,
    InvalidIdentity,
    Role,
    verify_identity,
)
from shopkit.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, POOL_CONNECTIONS, Refresh
from shopkit.migrations import MigrationSet, apply_migrations
from shopkit.openapi import OPENAPI_PATH, Access, documented, serve_description
from shopkit.operations import (
    OPERATIONS_PATH,
    PART_TIMEOUT_SECONDS,
    UNKNOWN_BACKLOG,
    DeadLetterQueue,
    OutboxBacklog,
    ServiceOperations,
)
from shopkit.operator import serve_metrics
from shopkit.outbox import Backlog, OutboxRelay, backlog, prune_published
from shopkit.settings import ServiceSettings
from shopkit.tasks import background, finish_or_cancel, periodic
from shopkit.web import Handler, base_middlewares, component_app, ok, read_body

SETTINGS_KEY = web.AppKey("settings", ServiceSettings)
S = TypeVar("S", bound=ServiceSettings)


def settings_of(app: web.Application, kind: type[S]) -> S:
    """The app's settings, as the service's own class of them."""
    settings = app[SETTINGS_KEY]
    if not isinstance(settings, kind):
        raise TypeError(f"the app's settings are {type(settings).__name__}, not {kind.__name__}")
    return settings
POOL_KEY = web.AppKey("pool", db.Pool)
BROKER_KEY = web.AppKey("broker", Broker)
CONSUMERS_KEY = web.AppKey("consumers", list)
SUBSCRIPTIONS_KEY = web.AppKey("subscriptions", tuple)
IDENTITY_KEY = web.RequestKey("identity", Identity)
NOT_FROM_GATEWAY = "This service only answers requests that come through the gateway."

# Paths answered without a gateway identity: probes come from the operator's tooling, not
# through the gateway; the API description is public anyway.
UNGUARDED_PATHS = ("/health/", OPENAPI_PATH)
# How long the outbox relay's last pass may take at shutdown.
RELAY_FINISH_SECONDS = 1.0


def identity_key(name: str, settings: ServiceSettings) -> IdentityKey:
    """The key the gateway vouches to this service with; the service's name is its audience."""
    return IdentityKey(name, settings.identity_secret.get_secret_value().encode())


def identity_middleware(
    name: str, settings: ServiceSettings, unguarded: tuple[str, ...] = ()
) -> Callable[..., object]:
    key = identity_key(name, settings)
    open_paths = UNGUARDED_PATHS + unguarded

    @web.middleware
    async def check_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(open_paths):
            try:
                request[IDENTITY_KEY] = verify_identity(
                    request.headers.get(IDENTITY_HEADER),
                    key,
                    request.method,
                    request.rel_url.raw_path_qs,
                    await read_body(request),
                    settings.identity_max_age_seconds,
                )
            except InvalidIdentity as exc:
                raise errors.Unauthorized(NOT_FROM_GATEWAY) from exc
        return await handler(request)

    return check_identity


def identity(request: web.Request) -> Identity:
    return request[IDENTITY_KEY]


def require_user(request: web.Request) -> Identity:
    """The signed-in caller; 401 for an anonymous one."""
    caller = identity(request)
    if not caller.is_authenticated:
        raise errors.Unauthorized()
    return caller


def ensure_visible(caller: Identity, owner: UUID | None, message: str) -> None:
    """A resource is seen by its owner and by admins; to anyone else it does not exist (404,
    `message`), as it does not when there is none (`owner` None)."""
    if owner is None or (caller.role is not Role.ADMIN and owner != caller.user_id):
        raise errors.NotFound(message)


def require_admin(request: web.Request) -> Identity:
    """The gateway checks the role too; services check again so no route relies on one guard."""
    caller = require_user(request)
    if caller.role is not Role.ADMIN:
        raise errors.Forbidden()
    return caller


def _database(
    schema: str, migrations: Sequence[MigrationSet]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        conn = await db.connect_when_ready(settings, schema)
        try:
            await apply_migrations(conn, schema, migrations)
        finally:
            await conn.close()
        app[POOL_KEY] = await db.create_pool(settings, schema)
        yield
        await app[POOL_KEY].close()

    return ctx


def _broker(name: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        broker = Broker(app[SETTINGS_KEY].rabbitmq_url.get_secret_value(), name)
        broker.start()
        app[BROKER_KEY] = broker
        yield
        await broker.close()

    return ctx


def _outbox_relay(schema: str) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    """The relay runs for the app's lifetime. At shutdown, once the requests are done, it
    makes a last pass, so the events they wrote leave now, and returns.

    It is cancelled only if that pass outlasts RELAY_FINISH_SECONDS (the broker stopped
    answering); its batch then rolls back and stays pending for the next relay, whether it
    went out or not (at least once). Not earlier: publishes cancelled while they await their
    confirms left the broker connection unable to close for a while (aio-pika's reader blocked
    on the closing channel's full frame queue), and their batch would be sent twice."""

    async def run_relay(app: web.Application) -> AsyncIterator[None]:
        relay = OutboxRelay(app[POOL_KEY], app[BROKER_KEY], app[SETTINGS_KEY])
        running = asyncio.create_task(relay.run(), name=f"{schema}-outbox-relay")
        yield
        relay.stop()
        await finish_or_cancel(running, within=RELAY_FINISH_SECONDS)

    async def prune(app: web.Application) -> None:
        await prune_published(app[POOL_KEY])

    return [run_relay, periodic("outbox-prune", 600, prune)]


async def _stop_consumers(app: web.Application) -> None:
    """On shutdown, once the listening socket is closed and before the wait for requests in
    flight: a process on its way out takes no more events; the queue gives them to others."""
    timeout = app[SETTINGS_KEY].shutdown_timeout_seconds
    await asyncio.gather(*(consumer.stop(timeout) for consumer in app[CONSUMERS_KEY]))


def _consumer(subscription: Subscription) -> Callable[[web.Application], AsyncIterator[None]]:
    """Consumes for the app's lifetime. At shutdown it stops taking messages; those in flight
    and not yet acknowledged are redelivered (to this queue's other consumers, or later)."""

    async def run(app: web.Application) -> None:
        consumer = Consumer(app[POOL_KEY], app[SETTINGS_KEY], subscription)
        app[CONSUMERS_KEY].append(consumer)
        await consumer.run()

    return background(f"{subscription.queue}-consumer", run)


@documented("Postgres, RabbitMQ and every consumer are ready", Access.PUBLIC, answer=Health,
            tag="operator")
async def ready(request: web.Request) -> web.Response:
    checks = await readiness_checks(request.app)
    if all(state == "ok" for state in checks.values()):
        return ok(Health(status="ok", checks=checks))
    down = ", ".join(name for name, state in checks.items() if state != "ok")
    raise errors.ServiceUnavailable(f"Not ready: {down} unavailable.").with_details(checks)


async def readiness_checks(app: web.Application) -> dict[str, str]:
    """Each part `/health/ready` checks, "ok" or "down"; the shop_ready gauge reads them too."""
    checks = {
        "postgres": await _postgres_check(app[POOL_KEY]),
        "rabbitmq": "ok" if app[BROKER_KEY].is_ready else "down",
    }
    for consumer in app[CONSUMERS_KEY]:
        checks[f"consumer {consumer.queue}"] = "ok" if consumer.is_consuming else "down"
    return checks


@documented("This service's outbox backlog and its consumers' dead-letter counts, for the "
            "gateway's GET /api/admin/operations; a part that cannot be read is null",
            Access.ADMIN, answer=ServiceOperations, tag="internal")
async def operations(request: web.Request) -> web.Response:
    require_admin(request)
    app = request.app
    outbox, dead_letters = await asyncio.gather(
        _outbox_backlog(app[POOL_KEY], PART_TIMEOUT_SECONDS),
        asyncio.gather(
            *(_dead_letters(app[BROKER_KEY], s.dead_letters) for s in app[SUBSCRIPTIONS_KEY])
        ),
    )
    backlog_now = UNKNOWN_BACKLOG if outbox is None else OutboxBacklog(
        unsent=outbox.unsent, oldest_unsent_age_seconds=outbox.oldest_age_seconds
    )
    return ok(ServiceOperations(outbox=backlog_now, dead_letters=dead_letters))


async def _outbox_backlog(pool: db.Pool, within: float) -> Backlog | None:
    """None when the database cannot tell (is_transient) within `within` seconds; anything
    else is a fault of ours and is raised."""
    try:
        async with asyncio.timeout(within), pool.acquire() as conn:
            return await backlog(conn)
    except Exception as exc:
        if not db.is_transient(exc):
            raise
        return None


async def _dead_letters(broker: Broker, queue: str) -> DeadLetterQueue:
    return DeadLetterQueue(queue=queue, messages=await messages_in(broker, queue))


async def _postgres_check(pool: db.Pool) -> str:
    try:
        async with asyncio.timeout(2), pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except db.DATABASE_ERRORS:
        return "down"
    return "ok"


def service_app(
    name: str,
    settings: ServiceSettings,
    migrations: Sequence[MigrationSet],
    routes: Iterable[web.AbstractRouteDef],
    subscriptions: Sequence[Subscription] = (),
    unguarded: tuple[str, ...] = (),
) -> web.Application:
    """`unguarded`: paths of the service's own that answer without a gateway identity."""
    app = component_app(
        [*base_middlewares(name, db.is_transient), identity_middleware(name, settings, unguarded)],
        settings.body_read_timeout_seconds,
    )
    app[SETTINGS_KEY] = settings
    app[CONSUMERS_KEY] = []
    app[SUBSCRIPTIONS_KEY] = tuple(subscriptions)
    app.cleanup_ctx.append(_database(name, migrations))
    app.cleanup_ctx.append(_broker(name))
    app.cleanup_ctx.extend(_outbox_relay(name))
    for subscription in subscriptions:
        app.cleanup_ctx.append(_consumer(subscription))
    app.on_shutdown.append(_stop_consumers)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get(OPERATIONS_PATH, operations)
    serve_metrics(
        app, settings, _pool_gauges(name), _outbox_gauges(name),
        event_gauges(BROKER_KEY, SUBSCRIPTIONS_KEY, CONSUMERS_KEY),
        readiness_gauge(name, readiness_checks),
    )
    app.add_routes(routes)
    serve_description(app, f"shop {name} service")
    return app


def _pool_gauges(component: str) -> Refresh:
    async def refresh(app: web.Application) -> None:
        pool = app[POOL_KEY]
        POOL_CONNECTIONS.labels(component, "in_use").set(pool.size - pool.idle)
        POOL_CONNECTIONS.labels(component, "idle").set(pool.idle)

    return refresh


def _outbox_gauges(component: str) -> Refresh:
    async def refresh(app: web.Application) -> None:
        outbox = await _outbox_backlog(app[POOL_KEY], within=2)
        if outbox is None:
            return  # the scrape still answers; these two gauges keep their last values
        OUTBOX_BACKLOG.labels(component).set(outbox.unsent)
        OUTBOX_OLDEST_AGE.labels(component).set(outbox.oldest_age_seconds or 0.0)

    return refresh
