"""App factory of the gateway."""

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
from aiohttp import web

from gateway.docs import DOCS_PATH, SPEC_PATH, add_docs
from gateway.revocations import TOKEN_CACHE_KEY, token_cache
from gateway.routes import Access, match_route
from gateway.settings import GatewaySettings
from gateway.upstream import (
    HTTP_KEY,
    SETTINGS_KEY,
    authenticate,
    client_address,
    forward,
)
from shopkit import errors
from shopkit.health import live
from shopkit.identity import Identity, Role
from shopkit.metrics import METRICS_PATH, ROUTE_LABEL_KEY, add_metrics
from shopkit.openapi import documented
from shopkit.web import MAX_BODY_BYTES, ApiModel, base_middlewares, dumps, request_id

READINESS_TIMEOUT_SECONDS = 2.0


# Answered by the gateway itself, for GET only; other methods must not reach the proxy.
LOCAL_PATHS = frozenset(
    {"/api/ping", SPEC_PATH, DOCS_PATH, "/health/live", "/health/ready", METRICS_PATH}
)


# The methods routes are served with. Any other (TRACE, ...) goes on anonymously, so the
# service answers 405 with the methods it does allow there; no handler can run for it, and
# every handler checks the caller's role again anyway.
API_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


class PingReport(ApiModel):
    status: Literal["ok", "degraded"]
    services: dict[str, str]


class PingAnswer(PingReport):
    success: Literal[True]
    data: PingReport


async def proxy(request: web.Request) -> web.StreamResponse:
    if request.path in LOCAL_PATHS:
        raise errors.MethodNotAllowed(headers={"Allow": "GET,HEAD"})
    route = match_route(request.rel_url.raw_path)
    if route is None:
        raise errors.NotFound()
    request[ROUTE_LABEL_KEY] = route.pattern.pattern
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge()
    address = client_address(request, request.app[SETTINGS_KEY])
    caller = Identity(Role.ANONYMOUS, client_address=address)
    if request.method in API_METHODS and route.needs_token:
        caller = await authenticate(request, address)
        if route.access is Access.ADMIN and caller.role is not Role.ADMIN:
            raise errors.Forbidden()
    if route.service is None:
        raise errors.NotFound()
    response = await forward(request, route, caller)
    if route.ends_sessions and response.status == 200 and caller.user_id is not None:
        # Refused at once here; other instances hear auth.session_revoked.
        request.app[TOKEN_CACHE_KEY].evict_users([caller.user_id])
    return response


@documented("Every service's readiness (503 and `degraded` when one is not ready)",
            Access.PUBLIC, answer=PingAnswer, enveloped=False, tag="health")
async def ping(request: web.Request) -> web.Response:
    """Every service's readiness (its Postgres and RabbitMQ included), named one by one."""
    upstreams = request.app[SETTINGS_KEY].upstreams()
    states = await asyncio.gather(*(_readiness(request, url) for url in upstreams.values()))
    services = dict(zip(upstreams, states, strict=True))
    healthy = all(state == "ok" for state in services.values())
    status = "ok" if healthy else "degraded"
    report = {"status": status, "services": services}
    if healthy:
        body = {"success": True, **report, "data": report}
    else:
        failing = ", ".join(f"{name}: {state}" for name, state in services.items() if state != "ok")
        error = errors.ServiceUnavailable(f"Degraded: {failing}.")
        body = {**errors.error_body(error, request_id(request)), **report}
    return web.Response(
        body=dumps(body),
        status=200 if healthy else 503,
        content_type="application/json",
        headers=None if healthy else {"Retry-After": "5"},
    )


async def _readiness(request: web.Request, base_url: str) -> str:
    """"ok", "unreachable", or the dependencies the service reports down, e.g. "postgres down"."""
    try:
        async with request.app[HTTP_KEY].get(
            base_url + "/health/ready",
            timeout=aiohttp.ClientTimeout(total=READINESS_TIMEOUT_SECONDS),
        ) as response:
            if response.status == 200:
                return "ok"
            checks = (await response.json()).get("details") or {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "unreachable"
    down = [name for name, state in checks.items() if state != "ok"]
    return f"{', '.join(down)} down" if down else "not ready"


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_connections, keepalive_timeout=30, ttl_dns_cache=60
    )
    # Bodies pass through as the service encoded them; the gateway never re-encodes.
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        app[HTTP_KEY] = session
        yield


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(middlewares=base_middlewares("gateway"), client_max_size=MAX_BODY_BYTES)
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(
        token_cache(
            settings.token_cache_seconds,
            settings.token_cache_size,
            settings.rabbitmq_url.get_secret_value(),
        )
    )
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", live)
    app.router.add_get("/api/ping", ping)
    add_docs(app)
    add_metrics(app)
    app.router.add_route("*", "/{path:.*}", proxy)
    return app
