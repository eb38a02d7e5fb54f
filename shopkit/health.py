"""Liveness, answered alike by every component, the gateway included.

Kept apart from shopkit.app (the services' readiness, which asks Postgres and RabbitMQ) so the
gateway, which has no database, does not load the database driver to answer it.
"""

from aiohttp import web

from shopkit.openapi import Access, documented
from shopkit.web import ApiModel, ok


class Health(ApiModel):
    status: str
    checks: dict[str, str] | None = None


@documented("The process is up", Access.PUBLIC, answer=Health, tag="operator")
async def live(request: web.Request) -> web.Response:
    return ok({"status": "ok"})
