"""App factory of the orders service."""

import logging
from pathlib import Path

from aiohttp import web

from services.orders.orders.expiry import expire_overdue_orders
from services.orders.routes import routes
from services.orders.settings import OrdersSettings
from shopkit.app import POOL_KEY, service_app, settings_of
from shopkit.migrations import service_migrations
from shopkit.tasks import periodic

log = logging.getLogger("services.orders")

NAME = "orders"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")


async def expire_orders(app: web.Application) -> None:
    settings = settings_of(app, OrdersSettings)
    expired = await expire_overdue_orders(app[POOL_KEY], settings.placed_order_ttl_seconds)
    if expired:
        log.info("placed orders expired", extra={"cancelled": expired})


def create_app(settings: OrdersSettings) -> web.Application:
    app = service_app(NAME, settings, MIGRATIONS, routes)
    app.cleanup_ctx.append(
        periodic("placed-order-expiry", settings.placed_order_sweep_interval_seconds,
                 expire_orders)
    )
    return app
