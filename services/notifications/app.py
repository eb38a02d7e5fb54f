"""App factory of the notifications service."""

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.notifications.handlers import SUBSCRIPTION
from services.notifications.hub import Hub
from services.notifications.routes import HUB_KEY, routes
from services.notifications.settings import NotificationsSettings
from shopkit.app import SETTINGS_KEY, service_app
from shopkit.metrics import REFRESH_KEY, SSE_CONNECTIONS
from shopkit.migrations import service_migrations
from shopkit.tasks import background

NAME = "notifications"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")


async def _hub(app: web.Application) -> AsyncIterator[None]:
    app[HUB_KEY] = Hub(app[SETTINGS_KEY])
    app[REFRESH_KEY].append(_stream_gauge)
    yield


async def _stream_gauge(app: web.Application) -> None:
    SSE_CONNECTIONS.labels(NAME).set(app[HUB_KEY].connected)


async def _listen(app: web.Application) -> None:
    await app[HUB_KEY].run()


def create_app(settings: NotificationsSettings) -> web.Application:
    app = service_app(NAME, settings, MIGRATIONS, routes, subscriptions=[SUBSCRIPTION])
    app.cleanup_ctx.append(_hub)
    app.cleanup_ctx.append(background("notification-listener", _listen))
    return app
