"""App factory of the notifications service."""

from pathlib import Path

from aiohttp import web

from services.notifications.routes import routes
from services.notifications.settings import NotificationsSettings
from shopkit.app import service_app
from shopkit.migrations import service_migrations

NAME = "notifications"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")


def create_app(settings: NotificationsSettings) -> web.Application:
    return service_app(NAME, settings, MIGRATIONS, routes)
