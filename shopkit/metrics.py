"""Prometheus metrics of every component, served at `GET /metrics` on the component's own
metrics listener (shopkit.operator), never on its API port.

The metric objects are process-wide (prometheus-client's registry is), labelled by component;
gauges that describe the moment (pool usage, outbox backlog, open streams) are read from the
app when scraped, so they cost nothing between scrapes.
"""

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "shop_http_requests_total", "HTTP requests answered", ["component", "route", "method", "status"]
)
LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["component", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_CONNECTIONS = Gauge(
    "shop_db_pool_connections", "Database pool connections", ["component", "state"]
)
OUTBOX_BACKLOG = Gauge("shop_outbox_backlog", "Outbox rows not yet published", ["component"])
OUTBOX_OLDEST_AGE = Gauge(
    "shop_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["component"]
)
EVENTS_CONSUMED = Counter("shop_events_consumed_total", "Events applied or skipped", ["queue"])
EVENTS_RETRIED = Counter("shop_events_retried_total", "Events sent for another try", ["queue"])
EVENTS_DEAD_LETTERED = Counter(
    "shop_events_dead_lettered_total", "Events sent to the dead-letter queue", ["queue"]
)
SSE_CONNECTIONS = Gauge("shop_sse_connections", "Open notification streams", ["component"])
# What the alerts of deploy/observability watch besides (docs/alerting.md). Labels are only
# components, queues and fixed words, so the series stay as few as those.
CONSUMER_LAG = Gauge(
    "shop_consumer_lag_messages", "Messages waiting in a consumer's queue, not yet delivered",
    ["queue"],
)
DEAD_LETTERS = Gauge(
    "shop_dead_letter_messages", "Messages in a consumer's dead-letter queue (<queue>.dlq)",
    ["queue"],
)
CONSUMER_RUNNING = Gauge(
    "shop_consumer_running", "1 while this instance consumes from the queue, else 0", ["queue"]
)
READY = Gauge(
    "shop_ready", "1 while the component's /health/ready passes, else 0", ["component"]
)
# hit, miss, or off: the cache was not asked (TOKEN_CACHE_SECONDS=0, or revocations unheard).
TOKEN_CACHE_LOOKUPS = Counter(
    "shop_token_cache_lookups_total", "Tokens looked up in the gateway's token cache", ["result"]
)
REVOCATIONS_HEARD = Counter(
    "shop_revocations_heard_total", "auth.session_revoked events the gateway heard"
)
POOL_WAIT = Histogram(
    "shop_db_pool_wait_seconds",
    "Time to get a connection from the service's database pool",
    ["component"],
    # Most acquires find a connection at once (microseconds); the rest show the pool is short.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

METRICS_PATH = "/metrics"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refresh = Callable[[web.Application], Awaitable[None]]
REFRESH_KEY = web.AppKey("metrics_refresh", list)


def _route_label(request: web.Request) -> str:
    """The route's template (`/api/orders/{order_id}`), never the raw path: ids in labels
    would make a new time series per order."""
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


# A client may send any of the dozens of methods the HTTP parser knows: those the API does not
# use share one label, so a client cannot add time series (one per label value) at will.
LABELLED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_metrics(component: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    # Each labelled child is looked up once and kept: labels() takes a lock and builds its key
    # on every call. Routes, methods and statuses are few (routes are templates), so are these.
    counters: dict[tuple[str, str, int], Counter] = {}
    latencies: dict[tuple[str, str], Histogram] = {}

    def record(route: str, method: str, status: int, seconds: float) -> None:
        counter = counters.get((route, method, status))
        if counter is None:
            counter = counters[route, method, status] = REQUESTS.labels(
                component, route, method, str(status))
        latency = latencies.get((route, method))
        if latency is None:
            latency = latencies[route, method] = LATENCY.labels(component, route, method)
        counter.inc()
        latency.observe(seconds)

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            method = request.method if request.method in LABELLED_METHODS else "OTHER"
            record(request.get(ROUTE_LABEL_KEY) or _route_label(request), method, status,
                   time.perf_counter() - started)

    return measure


# A handler that serves many paths (the gateway's proxy) names the route it matched here.
ROUTE_LABEL_KEY = web.RequestKey("metrics_route", str)


def add_refreshers(app: web.Application, *refreshers: Refresh) -> None:
    """Each refresher updates its gauges from the app before a scrape."""
    app.setdefault(REFRESH_KEY, []).extend(refreshers)
