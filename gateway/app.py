"""App factory of the gateway."""

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
from aiohttp import web

from gateway.docs import DOCS_PATH, INIT_PATH, SPEC_PATH, add_docs
from gateway.recent import Recent
from gateway.revocations import TOKEN_CACHE_KEY, token_cache
from gateway.routes import Access, match_route
from gateway.settings import GatewaySettings
from gateway.shares import ClientShares
from gateway.storefront import PAGE_PATH, add_storefront
from gateway.upstream import (
    HTTP_KEY,
    SETTINGS_KEY,
    STREAM_HTTP_KEY,
    STREAM_SLOTS_KEY,
    UPSTREAMS_KEY,
    StreamSlots,
    admit,
    client_address,
    forward,
    forward_stream,
    operations_of,
)
from shopkit import errors, tracing
from shopkit.clients import client_bucket
from shopkit.health import live
from shopkit.metrics import ROUTE_LABEL_KEY
from shopkit.openapi import documented
from shopkit.operations import (
    UNKNOWN_BACKLOG,
    ComponentReadiness,
    DeadLetterQueue,
    Operations,
    ServiceOperations,
    ServiceOutbox,
)
from shopkit.operator import serve_metrics
from shopkit.tuning import UPSTREAM_DNS_CACHE_SECONDS
from shopkit.web import (
    EDGE_ACCESS_LEVEL,
    MAX_BODY_BYTES,
    ApiModel,
    base_middlewares,
    component_app,
    dumps,
    ok,
    request_id,
)

READINESS_TIMEOUT_SECONDS = 2.0
READINESS_KEY = web.AppKey("readiness", Recent)
CLIENT_SHARES_KEY = web.AppKey("client_shares", ClientShares)
# Each service's dead-letter queues, as it last named them to this instance: while it cannot
# be asked, they are still listed (their counts unknown) rather than dropped from the panel.
KNOWN_DEAD_LETTERS_KEY = web.AppKey("known_dead_letters", dict)
OPERATIONS_PATH = "/api/admin/operations"


# Answered by the gateway itself, for GET only; other methods must not reach the proxy.
LOCAL_PATHS = frozenset(
    {"/api/ping", SPEC_PATH, DOCS_PATH, INIT_PATH, PAGE_PATH, "/health/live", "/health/ready"}
)
# The same, for an admin only: other methods are 405 too, but only once the caller is admitted.
LOCAL_ADMIN_PATHS = frozenset({OPERATIONS_PATH})


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
    tracing.name_request(request.method, route.pattern.pattern)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge()
    address = client_address(request, request.app[SETTINGS_KEY].trusted_proxies)
    with request.app[CLIENT_SHARES_KEY].turn(client_bucket(address)) as turn:
        access = route.access if request.method in API_METHODS else Access.PUBLIC
        caller = await admit(request, access, address)
        if route.service is None:
            if request.path in LOCAL_ADMIN_PATHS:
                raise errors.MethodNotAllowed(headers={"Allow": "GET,HEAD"})
            raise errors.NotFound()
        if route.streaming and request.method == "GET":
            # Once open, a stream counts against its user's and the instance's stream caps.
            return await forward_stream(request, route, caller, opened=turn.give_back)
        response = await forward(request, route, caller)
    if route.ends_sessions and response.status == 200 and caller.user_id is not None:
        # Refused at once here; other instances hear auth.session_revoked.
        request.app[TOKEN_CACHE_KEY].evict_users([caller.user_id])
    return response


@documented("Every service's readiness (503 and `degraded` when one is not ready)",
            Access.PUBLIC, answer=PingAnswer, enveloped=False, tag="health")
async def ping(request: web.Request) -> web.Response:
    """Every service's readiness (its Postgres and RabbitMQ included), named one by one; asked
    of the services at most once per `fanout_cache_seconds`, whoever calls."""
    services: dict[str, str] = await request.app[READINESS_KEY].get()
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


@documented("Each component's readiness, each service's outbox backlog and each consumer's "
            "dead-letter queue; 200 while parts are down, which show as not ready or null",
            Access.ADMIN, answer=Operations, tag="operator")
async def operations(request: web.Request) -> web.Response:
    """Readiness as `/api/ping` has it (at most `fanout_cache_seconds` old); each service's
    part asked of it now, all at once, each for at most OPERATIONS_TIMEOUT_SECONDS."""
    address = client_address(request, request.app[SETTINGS_KEY].trusted_proxies)
    # Within the client's share, as a proxied request is: each call may ask auth about its
    # token, and a client must not hold more of the gateway's connections than its share.
    with request.app[CLIENT_SHARES_KEY].turn(client_bucket(address)):
        caller = await admit(request, Access.ADMIN, address)
        services = list(request.app[UPSTREAMS_KEY])
        readiness, parts = await asyncio.gather(
            request.app[READINESS_KEY].get(),
            asyncio.gather(*(operations_of(request, caller, name) for name in services)),
        )
    by_service = dict(zip(services, parts, strict=True))
    return ok(Operations(
        components=[
            ComponentReadiness(name="gateway", ready=True),  # it is answering
            *(ComponentReadiness(name=name, ready=readiness.get(name) == "ok")
              for name in services),
        ],
        outboxes=[
            ServiceOutbox(service=name, **(part.outbox if part else UNKNOWN_BACKLOG).model_dump())
            for name, part in by_service.items()
        ],
        dead_letters=_dead_letters(request.app[KNOWN_DEAD_LETTERS_KEY], by_service),
    ))


def _dead_letters(
    known: dict[str, list[str]], parts: dict[str, ServiceOperations | None]
) -> list[DeadLetterQueue]:
    """Each service's dead-letter queues as it told them; for one that did not answer, those
    it named last time, counts unknown. `known` is brought up to date."""
    listed: list[DeadLetterQueue] = []
    for name, part in parts.items():
        if part is None:
            listed += [DeadLetterQueue(queue=queue, messages=None) for queue in known.get(name, ())]
        else:
            known[name] = [dead.queue for dead in part.dead_letters]
            listed += part.dead_letters
    return listed


def _readiness_of_all(app: web.Application) -> Recent[dict[str, str]]:
    async def ask() -> dict[str, str]:
        upstreams = app[UPSTREAMS_KEY]
        states = await asyncio.gather(
            *(_readiness(app[HTTP_KEY], upstream.url) for upstream in upstreams.values())
        )
        return dict(zip(upstreams, states, strict=True))

    return Recent(ask, app[SETTINGS_KEY].fanout_cache_seconds)


async def _readiness(http: aiohttp.ClientSession, base_url: str) -> str:
    """"ok", "unreachable", or the dependencies the service reports down, e.g. "postgres down"."""
    try:
        async with http.get(
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


async def _http_clients(app: web.Application) -> AsyncIterator[None]:
    """Two pools of connections to the services: one for requests, one for event streams, so
    that streams, however many, never hold a connection a request waits for."""
    settings = app[SETTINGS_KEY]
    async with _client(settings.upstream_connections, settings) as requests, _client(
        settings.max_streams, settings
    ) as streams:
        app[HTTP_KEY] = requests
        app[STREAM_HTTP_KEY] = streams
        app[READINESS_KEY] = _readiness_of_all(app)
        yield


def _client(connections: int, settings: GatewaySettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=connections, keepalive_timeout=settings.upstream_keepalive_seconds,
        ttl_dns_cache=UPSTREAM_DNS_CACHE_SECONDS,
    )
    # Bodies pass through as the service encoded them; the gateway never re-encodes. One
    # session serves every client, so it keeps no cookies: one client's would go to all.
    # Traced, each call is a span of its own whose traceparent the service receives.
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
        cookie_jar=aiohttp.DummyCookieJar(), trace_configs=tracing.client_trace_configs(),
    )


def create_app(settings: GatewaySettings) -> web.Application:
    app = component_app(base_middlewares("gateway", access_level=EDGE_ACCESS_LEVEL),
                        settings.body_read_timeout_seconds)
    app[SETTINGS_KEY] = settings
    app[UPSTREAMS_KEY] = settings.upstreams()
    app[STREAM_SLOTS_KEY] = StreamSlots(settings.max_streams)
    app[CLIENT_SHARES_KEY] = ClientShares(settings.max_requests_per_client)
    app[KNOWN_DEAD_LETTERS_KEY] = {}
    app.cleanup_ctx.append(_http_clients)
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
    app.router.add_get(OPERATIONS_PATH, operations)
    add_docs(app)
    add_storefront(app)
    serve_metrics(app, settings)
    app.router.add_route("*", "/{path:.*}", proxy)
    return app
