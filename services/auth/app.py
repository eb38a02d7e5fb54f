"""App factory of the auth service."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.auth import queries
from services.auth.passwords import Passwords
from services.auth.routes import CHECK_PATH, PASSWORDS_KEY, front_proxy_routes, routes
from services.auth.settings import AuthSettings
from shopkit import tuning
from shopkit.app import POOL_KEY, SETTINGS_KEY, service_app, settings_of
from shopkit.migrations import service_migrations
from shopkit.tasks import periodic

log = logging.getLogger("services.auth")

NAME = "auth"
MIGRATIONS = service_migrations(NAME, Path(__file__).parent / "migrations")
SWEEP_LOCK = "auth:session-sweep"


async def sweep_expired_sessions(app: web.Application) -> int | None:
    settings = settings_of(app, AuthSettings)
    async with app[POOL_KEY].acquire() as conn:
        deleted = await queries.delete_expired(conn, SWEEP_LOCK, settings.session_idle_seconds)
    if deleted:
        log.info("expired sessions swept", extra={"deleted": deleted})
    return deleted


async def _passwords(app: web.Application) -> AsyncIterator[None]:
    # This process hashes passwords: argon2's large buffers go back to the OS after each.
    tuning.return_large_buffers_to_the_os()
    app[PASSWORDS_KEY] = Passwords(app[SETTINGS_KEY])
    yield
    app[PASSWORDS_KEY].close()


def create_app(settings: AuthSettings) -> web.Application:
    if settings.front_proxy_check:
        app = service_app(NAME, settings, MIGRATIONS, [*routes, *front_proxy_routes],
                          unguarded=(CHECK_PATH,))
    else:
        app = service_app(NAME, settings, MIGRATIONS, routes)
    app.cleanup_ctx.append(_passwords)
    app.cleanup_ctx.append(
        periodic("session-sweep", settings.session_sweep_interval_seconds, sweep_expired_sessions)
    )
    return app
