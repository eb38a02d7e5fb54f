"""App factory of the tracking service."""

from pathlib import Path

from aiohttp import web

from services.tracking.handlers import SUBSCRIPTION
from services.tracking.routes import routes
from services.tracking.settings import TrackingSettings
from shopkit.app import service_app
from shopkit.migrations import service_migrations

NAME = "tracking"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")


def create_app(settings: TrackingSettings) -> web.Application:
    return service_app(NAME, settings, MIGRATIONS, routes, subscriptions=[SUBSCRIPTION])
