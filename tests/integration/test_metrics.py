"""What an operator scrapes: GET /metrics on every component's own metrics listener, never on
the port clients reach."""

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aio_pika
import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from services.tracking.handlers import SUBSCRIPTION as TRACKING
from shopkit.app import CONSUMERS_KEY
from shopkit.events import ORDER_CREATED, owner_of
from tests.conftest import unique_email
from tests.events import publish_event, take_dead_letters
from tests.harness import RABBITMQ_URL, System, call, eventually, login, place_order, register

UUID_IN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")


async def _scrape(url: str) -> dict[str, list]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_every_component_serves_its_metrics(
    system: System, client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    await call(client, "POST", f"/api/admin/orders/{order['id']}/status", admin_token,
               {"status": "confirmed"})
    await call(client, "GET", "/api/nothing-here", user_token)

    gateway = await _scrape(system.metrics_url("gateway"))
    requests = gateway["shop_http_requests"]
    assert _value(requests, "shop_http_requests_total", component="gateway",
                  route=r"^/api/orders(/.*)?$", method="POST", status="201") >= 1
    assert _value(requests, "shop_http_requests_total", component="gateway", status="404") >= 1
    assert _value(gateway["shop_http_request_duration_seconds"],
                  "shop_http_request_duration_seconds_count", component="gateway") >= 3

    orders = await _scrape(system.metrics_url("orders"))
    assert _value(orders["shop_http_requests"], "shop_http_requests_total", component="orders",
                  route="/api/orders", method="POST", status="201") >= 1
    routes = {s.labels["route"] for s in orders["shop_http_requests"]}
    assert not any(UUID_IN.search(route) for route in routes), "ids never become labels"
    pool = orders["shop_db_pool_connections"]
    assert {s.labels["state"] for s in pool if s.labels["component"] == "orders"} == {
        "in_use", "idle"
    }
    assert "shop_outbox_backlog" in orders and "shop_outbox_oldest_age_seconds" in orders

    async def tracking_consumed() -> bool:
        tracking = await _scrape(system.metrics_url("tracking"))
        return _value(tracking["shop_events_consumed"], "shop_events_consumed_total",
                      queue="tracking.orders") >= 2

    await eventually(tracking_consumed)
    notifications = await _scrape(system.metrics_url("notifications"))
    assert "shop_sse_connections" in notifications
    assert "shop_events_dead_lettered" in notifications and "shop_events_retried" in notifications


async def test_metrics_are_not_served_where_clients_reach(
    system: System, client: aiohttp.ClientSession
) -> None:
    async with client.get("/metrics") as response:
        assert response.status == 404, "the gateway's public port serves no metrics"
        assert (await response.json())["code"] == "not_found"
    async with aiohttp.ClientSession() as direct:
        for name, url in system.service_urls.items():
            async with direct.get(url + "/metrics") as response:
                assert response.status in (401, 404), name
                assert "shop_http_requests_total" not in await response.text()
            async with direct.get(system.metrics_url(name) + "/metrics") as response:
                assert response.status == 200, name


async def test_methods_the_api_does_not_use_share_one_label(
    system: System, client: aiohttp.ClientSession,
) -> None:
    # The HTTP parser refuses a method it does not know; these it knows (WebDAV's and others).
    others = ("PROPFIND", "MKCOL", "LOCK")
    for method in others:
        async with client.request(method, "/api/products") as response:
            assert response.status in (404, 405)
    methods = {s.labels["method"] for s in
               (await _scrape(system.metrics_url("gateway")))["shop_http_requests"]}
    assert "OTHER" in methods and not methods & set(others)


# The metrics the alerts and the dashboard read (deploy/observability, docs/alerting.md) ------


def _reading(
    system: System, scraped: str, name: str, **labels: str
) -> Callable[[], Awaitable[float]]:
    """Reads one metric's value (summed over the series `labels` select) from a fresh scrape
    of the `scraped` component's metrics listener, as Prometheus would."""
    family = name.removesuffix("_total").removesuffix("_count")

    async def read() -> float:
        families = await _scrape(system.metrics_url(scraped))
        return _value(families.get(family, []), name, **labels)

    return read


def _until(read: Callable[[], Awaitable[float]], holds: Callable[[float], bool]) -> Callable:
    async def check() -> bool:
        return holds(await read())

    return check


async def test_a_poison_message_raises_its_dead_letter_queues_depth(system: System) -> None:
    depth = _reading(system, "tracking", "shop_dead_letter_messages", queue=TRACKING.queue)
    await take_dead_letters(TRACKING.queue)  # each test sees only its own
    await eventually(_until(depth, lambda value: value == 0))
    await publish_event(ORDER_CREATED, {}, raw_body=f"{{not json {uuid.uuid4()}".encode())
    try:
        await eventually(_until(depth, lambda value: value >= 1))
    finally:
        await take_dead_letters(TRACKING.queue)
    await eventually(_until(depth, lambda value: value == 0))


async def _publish_to_queue(queue: str, count: int) -> None:
    """Well-formed order.created events straight into `queue`, as the DLQ tool requeues
    (the default exchange under the queue's name): only that queue's consumers get them."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for _ in range(count):
            body = orjson.dumps({
                "id": str(uuid.uuid4()), "type": ORDER_CREATED,
                "occurredAt": datetime.now(UTC).isoformat(), "source": owner_of(ORDER_CREATED),
                "data": {"orderId": str(uuid.uuid4()), "userId": str(uuid.uuid4()),
                         "status": "placed", "version": 1},
            })
            await channel.default_exchange.publish(
                aio_pika.Message(body, content_type="application/json"), routing_key=queue
            )


async def test_a_stopped_consumer_shows_stopped_not_ready_and_its_queue_lagging(
    system: System,
) -> None:
    """What ShopConsumerStopped and ShopComponentNotReady read, and the lag they explain."""

    def running() -> Callable[[], Awaitable[float]]:  # the running app, also once restarted
        return _reading(system, "tracking", "shop_consumer_running", queue=TRACKING.queue)

    def ready() -> Callable[[], Awaitable[float]]:
        return _reading(system, "tracking", "shop_ready", component="tracking")

    def lag() -> Callable[[], Awaitable[float]]:
        return _reading(system, "tracking", "shop_consumer_lag_messages", queue=TRACKING.queue)

    await eventually(_until(running(), lambda value: value == 1))
    await eventually(_until(ready(), lambda value: value == 1))
    try:
        for consumer in system.apps["tracking"][CONSUMERS_KEY]:
            await consumer.stop(finish_within=1)
        await eventually(_until(running(), lambda value: value == 0))
        await eventually(_until(ready(), lambda value: value == 0))
        await _publish_to_queue(TRACKING.queue, 3)
        await eventually(_until(lag(), lambda value: value >= 3))
    finally:
        # A stopped consumer does not start again: a fresh instance, as a restart would.
        await system.stop("tracking")
        await system.start("tracking")
    await eventually(_until(lag(), lambda value: value == 0))
    assert await running()() == 1 and await ready()() == 1


async def test_the_database_pool_wait_is_observed(
    system: System, client: aiohttp.ClientSession, user_token: str
) -> None:
    waits = _reading(system, "orders", "shop_db_pool_wait_seconds_count", component="orders")
    before = await waits()
    status, _ = await call(client, "GET", "/api/orders", user_token)
    assert status == 200
    assert await waits() > before
    families = await _scrape(system.metrics_url("orders"))
    buckets = [s for s in families["shop_db_pool_wait_seconds"]
               if s.name == "shop_db_pool_wait_seconds_bucket"
               and s.labels["component"] == "orders"]
    assert buckets and buckets[-1].labels["le"] == "+Inf"


async def test_a_token_asked_for_again_is_a_cache_hit(
    system: System, client: aiohttp.ClientSession, user_token: str
) -> None:
    hits = _reading(system, "gateway", "shop_token_cache_lookups_total", result="hit")
    lookups = _reading(system, "gateway", "shop_token_cache_lookups_total")
    before, looked_up_before = await hits(), await lookups()

    async def hit_again() -> bool:  # the cache is used once the gateway hears revocations
        status, _ = await call(client, "GET", "/api/users/me", user_token)
        assert status == 200
        return await hits() > before

    await eventually(hit_again)
    assert await lookups() > looked_up_before + 1, "the first lookup was a miss (or off)"
    families = await _scrape(system.metrics_url("gateway"))
    results = {s.labels["result"] for s in families["shop_token_cache_lookups"]}
    assert results == {"hit", "miss", "off"}, "one series per result, whatever the tokens"


async def test_a_revocation_heard_is_counted(
    system: System, client: aiohttp.ClientSession
) -> None:
    heard = _reading(system, "gateway", "shop_revocations_heard_total")
    email = unique_email()
    await register(client, email)
    token = await login(client, email)
    before = await heard()
    status, _ = await call(client, "POST", "/api/users/logout", token)
    assert status == 200
    await eventually(_until(heard, lambda value: value > before))
