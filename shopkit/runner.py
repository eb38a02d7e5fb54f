"""Starts one component in the foreground; SIGTERM or SIGINT shuts it down gracefully.

On a signal aiohttp stops accepting connections, lets in-flight requests finish for up to
`shutdown_timeout_seconds`, then runs the cleanup contexts (background tasks, broker, pool).
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from shopkit.logs import configure_logging
from shopkit.settings import ComponentSettings

log = logging.getLogger("shopkit.runner")

S = TypeVar("S", bound=ComponentSettings)


def serve(
    component: str, create_app: Callable[[S], web.Application], settings: S
) -> None:
    configure_logging(component, settings.log_level)
    log.info("starting", extra={"host": settings.host, "port": settings.port})
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        print=None,
    )
