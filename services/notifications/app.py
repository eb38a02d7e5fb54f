"""App factory of the notifications service."""

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.notifications import queries
from services.notifications.handlers import SUBSCRIPTION
from services.notifications.hub import Hub
from services.notifications.routes import HUB_KEY, routes
from services.notifications.settings import NotificationsSettings
from shopkit.app import POOL_KEY, service_app, settings_of
from shopkit.db import DATABASE_ERRORS
from shopkit.metrics import SSE_CONNECTIONS, add_refreshers
from shopkit.migrations import service_migrations
from shopkit.tasks import background, periodic

NAME = "notifications"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")
# Leases are renewed this many times within one, so one late renewal never lets a stream go.
RENEWALS_PER_LEASE = 3


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = settings_of(app, NotificationsSettings)
    app[HUB_KEY] = Hub(settings, settings.max_streams_per_instance)
    add_refreshers(app, _stream_gauge)
    yield
    # Its streams are gone with it; if the database cannot be told, their leases run out.
    with contextlib.suppress(*DATABASE_ERRORS):
        async with app[POOL_KEY].acquire() as conn:
            await queries.close_streams_of(conn, app[HUB_KEY].instance_id)


async def _stream_gauge(app: web.Application) -> None:
    SSE_CONNECTIONS.labels(NAME).set(app[HUB_KEY].connected)


async def _listen(app: web.Application) -> None:
    await app[HUB_KEY].run()


async def renew_leases(app: web.Application) -> None:
    """Renews the leases of this instance's open streams; forgets its others."""
    hub = app[HUB_KEY]
    async with app[POOL_KEY].acquire() as conn:
        await queries.renew_streams(
            conn, hub.instance_id, hub.stream_ids,
            settings_of(app, NotificationsSettings).stream_lease_seconds,
        )


async def _prune_revocations(app: web.Application) -> None:
    async with app[POOL_KEY].acquire() as conn:
        await queries.prune_revoked(conn)


def create_app(settings: NotificationsSettings) -> web.Application:
    app = service_app(NAME, settings, MIGRATIONS, routes, subscriptions=[SUBSCRIPTION])
    app.cleanup_ctx.append(_hub)
    app.cleanup_ctx.append(background("notification-listener", _listen))
    app.cleanup_ctx.append(
        periodic("stream-leases", settings.stream_lease_seconds / RENEWALS_PER_LEASE,
                 renew_leases)
    )
    app.cleanup_ctx.append(periodic("revocation-prune", 3600, _prune_revocations))
    return app
