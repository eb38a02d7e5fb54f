"""App factory of the orders service."""

from pathlib import Path

from aiohttp import web

from services.orders.routes import routes
from services.orders.settings import OrdersSettings
from shopkit.app import service_app
from shopkit.migrations import service_migrations

NAME = "orders"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")


def create_app(settings: OrdersSettings) -> web.Application:
    return service_app(NAME, settings, MIGRATIONS, routes)
