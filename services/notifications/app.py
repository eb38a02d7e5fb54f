"""App factory of the notifications service."""

from pathlib import Path

from aiohttp import web

from services.notifications.routes import routes
from services.notifications.settings import NotificationsSettings
from shopkit.app import service_app

NAME = "notifications"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotificationsSettings) -> web.Application:
    return service_app(NAME, settings, MIGRATIONS, routes)
