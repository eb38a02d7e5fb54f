"""What an operator scrapes: GET /metrics on every component's own metrics listener, never on
the port clients reach."""

import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import System, call, eventually, place_order

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
