"""What any client can learn or hold through the gateway's port (contract §4 Health, §6): no
software names, read timeouts for slow clients, and readiness and the API description asked of
the services at most once per period however many anonymous callers ask."""

import asyncio
import time
import uuid

import aiohttp
from prometheus_client import REGISTRY

from tests.harness import (
    System,
    call,
    client_from,
    create_product,
    event_stream,
    eventually,
    loopback_address,
    new_customer,
    running_system,
)
from tests.system_tests.support import lock_held, waiting_on_locks

SOFTWARE = ("aiohttp", "python", "uvloop", "asyncpg")


def _names_no_software(headers: "aiohttp.typedefs.LooseHeaders") -> bool:
    text = " ".join(f"{k}: {v}" for k, v in dict(headers).items()).lower()
    return not any(name in text for name in SOFTWARE)


async def _raw_exchange(url: str, request: bytes, read_seconds: float = 10) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(read_seconds):
            return await reader.read()  # to the end: the server closes the connection
    finally:
        writer.close()


async def test_no_answer_names_the_servers_software(
    system: System, client: aiohttp.ClientSession
) -> None:
    token, _ = await new_customer(client)
    for method, path in (("GET", "/api/ping"), ("GET", "/api/products"), ("GET", "/nowhere"),
                         ("TRACE", "/api/orders"), ("GET", "/api/openapi.json")):
        async with client.request(method, path) as response:
            assert response.headers.get("Server") == "shop", path
            assert _names_no_software(response.headers), path
    async with event_stream(system.gateway_url, token) as response:
        assert _names_no_software(response.headers)
    refused = await _raw_exchange(system.gateway_url, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    head = refused.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert " 400 " in head.splitlines()[0] and "server: shop" in head
    assert not any(name in head for name in SOFTWARE)
    async with aiohttp.ClientSession() as direct:
        for name, url in system.service_urls.items():
            async with direct.get(url + "/health/live") as response:
                assert _names_no_software(response.headers), name
            async with direct.get(system.metrics_url(name) + "/metrics") as response:
                assert _names_no_software(response.headers), name


async def test_a_client_trickling_its_headers_is_cut_off(databases) -> None:
    async with running_system(databases, gateway={"client_idle_timeout_seconds": 1}) as own:
        host, port = own.gateway_url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        try:
            writer.write(b"GET /api/products HTTP/1.1\r\nHost: x\r\n")
            while await _still_open(reader):
                assert time.monotonic() - started < 5, "still open well past the timeout"
                writer.write(b"X-Slow: y\r\n")  # a header line now and then, never the end
        except ConnectionError:
            pass  # closed while we wrote: what is tested
        finally:
            writer.close()


async def _still_open(reader: asyncio.StreamReader) -> bool:
    """Waits a moment for the server to close; False once it has."""
    try:
        async with asyncio.timeout(0.2):
            return bool(await reader.read(1))
    except TimeoutError:
        return True


async def test_a_client_trickling_its_body_gets_408(databases) -> None:
    async with running_system(databases, gateway={"body_read_timeout_seconds": 1}) as own:
        started = time.monotonic()
        answer = await _raw_exchange(
            own.gateway_url,
            b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"email\": ",
        )
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert b'"code":"request_timeout"' in answer.replace(b" ", b"")
        assert time.monotonic() - started < 5


def _served(component: str, route: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect() if metric.name == "shop_http_requests"
        for sample in metric.samples
        if sample.name == "shop_http_requests_total"
        and sample.labels["component"] == component and sample.labels["route"] == route
    )


async def test_anonymous_callers_cannot_multiply_the_services_load(
    system: System, client: aiohttp.ClientSession
) -> None:
    """Fifty pings and fifty descriptions at once: each service is asked for its readiness and
    its description at most twice (once per FANOUT_CACHE_SECONDS; the calls may straddle the
    end of one period)."""
    for path, route in (("/api/ping", "/health/ready"), ("/api/openapi.json", "/openapi.json")):
        before = _served("auth", route)

        async def ask(path: str = path) -> int:
            async with client.get(path) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(ask() for _ in range(50)))
        assert set(statuses) == {200}
        assert _served("auth", route) - before <= 2, path


async def test_one_client_cannot_hold_every_connection(
    databases, admin_token: str, admin_db
) -> None:
    """A client with its share of requests in flight (here 2, waiting on a product's lock) is
    refused more at once; another client is served meanwhile."""
    async with running_system(
        databases, gateway={"max_requests_per_client": 2}
    ) as own, client_from(own.gateway_url, loopback_address()) as hog, client_from(
        own.gateway_url, loopback_address()
    ) as other:
        token, address = await new_customer(hog)
        product = await create_product(hog, admin_token, stock=5)
        order = {"addressId": address,
                 "items": [{"productId": product["id"], "quantity": 1}]}
        async with lock_held(admin_db, "SELECT FROM orders.products WHERE id = $1 FOR UPDATE",
                             uuid.UUID(product["id"])):
            waiting = [asyncio.create_task(call(hog, "POST", "/api/orders", token, order))
                       for _ in range(2)]
            await eventually(lambda: _waiting_on_locks(admin_db, 2))
            status, body = await call(hog, "GET", "/api/products")
            assert status == 429 and body["code"] == "too_many_requests"
            assert (await call(other, "GET", "/api/products"))[0] == 200
        assert [status for status, _ in await asyncio.gather(*waiting)] == [201, 201]
        assert (await call(hog, "GET", "/api/products"))[0] == 200, "its share is back"


async def _waiting_on_locks(admin_db, count: int) -> bool:
    return await waiting_on_locks(admin_db, "orders") >= count
