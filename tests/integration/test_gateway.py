"""The gateway: routing, trust (identity stripping and signing), limits, outages, request ids."""

import asyncio
import gzip
import socket
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer

from shopkit.identity import IDENTITY_HEADER, Identity, IdentityKey, Role, sign_identity
from tests.conftest import unique_email
from tests.harness import (
    System,
    another_gateway,
    bearer,
    create_product,
    identity_key,
    register,
    running_system,
    wait_until_ready,
)

SERVICE_PATHS = {
    "auth": "/api/users/me",
    "orders": "/api/orders",
    "tracking": "/api/orders/00000000-0000-0000-0000-000000000000/tracking",
    "notifications": "/api/notifications",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_services_refuse_calls_that_bypass_the_gateway(
    system: System, user_token: str
) -> None:
    async with aiohttp.ClientSession() as direct:
        for name, path in SERVICE_PATHS.items():
            url = system.service_urls[name]
            async with direct.get(url + path, headers=bearer(user_token)) as response:
                assert response.status == 401, name
                body = await response.json()
                assert body["code"] == "unauthorized" and body["success"] is False
            async with direct.post(
                url + "/api/users/register",
                json={"email": unique_email(), "password": "correct horse", "name": "X"},
            ) as response:
                assert response.status == 401, f"{name}: public routes need the gateway too"
            for probe in ("/health/live", "/health/ready"):
                async with direct.get(url + probe) as response:
                    assert response.status == 200, f"{name}{probe}"


async def test_services_refuse_forged_replayed_and_stale_identities(
    system: System, client: aiohttp.ClientSession
) -> None:
    email = unique_email()
    user = await register(client, email)
    admin = Identity(Role.ADMIN, user_id=uuid.UUID(user["id"]))
    url = system.service_urls["auth"] + "/api/users/me"
    auth = identity_key("auth")
    forged = {
        "wrong secret": sign_identity(
            admin, IdentityKey("auth", b"x" * 32), "GET", "/api/users/me"
        ),
        # What a service holding only its own key could make: another service refuses it.
        "signed with the orders service's key": sign_identity(
            admin, identity_key("orders"), "GET", "/api/users/me"
        ),
        "made for another service": sign_identity(
            admin, IdentityKey("orders", auth.secret), "GET", "/api/users/me"
        ),
        "replayed onto another path": sign_identity(admin, auth, "GET", "/api/users/sessions"),
        "replayed with another query": sign_identity(admin, auth, "GET", "/api/users/me?x=1"),
        "another method": sign_identity(admin, auth, "POST", "/api/users/me"),
        "too old": sign_identity(admin, auth, "GET", "/api/users/me", now=time.time() - 300),
        "garbage": "abc.def",
    }
    async with aiohttp.ClientSession() as direct:
        for reason, header in forged.items():
            async with direct.get(url, headers={IDENTITY_HEADER: header}) as response:
                assert response.status == 401, reason
        good = sign_identity(admin, auth, "GET", "/api/users/me")
        async with direct.get(url, headers={IDENTITY_HEADER: good}) as response:
            assert response.status == 200, "the signature scheme itself works"


async def test_identity_headers_sent_by_clients_are_ignored(
    system: System, client: aiohttp.ClientSession, user_token: str
) -> None:
    async with client.get("/api/users/me", headers=bearer(user_token)) as response:
        me = (await response.json())["data"]
    someone_else = Identity(Role.ADMIN, user_id=uuid.uuid4())
    for path in ("/api/users/me", "/api/admin/orders"):
        # Even a correctly signed identity (as if captured from inside) is stripped by the gateway.
        service = "auth" if path.startswith("/api/users") else "orders"
        forged = sign_identity(someone_else, identity_key(service), "GET", path)
        async with client.get(path, headers={IDENTITY_HEADER: forged}) as response:
            assert response.status == 401, path
        for extra in ({}, {"Connection": f"keep-alive, {IDENTITY_HEADER}"}):
            headers = {**bearer(user_token), IDENTITY_HEADER: forged, **extra}
            async with client.get(path, headers=headers) as response:
                if path == "/api/admin/orders":
                    assert response.status == 403
                else:
                    assert response.status == 200
                    assert (await response.json())["data"] == me


async def test_public_routes_need_no_token_and_ignore_client_identities(
    client: aiohttp.ClientSession,
) -> None:
    # Were the client's (invalid) identity header passed on, the service would answer 401.
    async with client.post(
        "/api/users/register",
        json={"email": unique_email(), "password": "correct horse", "name": "Pub"},
        headers={IDENTITY_HEADER: "forged.identity"},
    ) as response:
        assert response.status == 201
    async with client.get("/api/users/me") as response:
        assert response.status == 401
    async with client.get("/api/users/me", headers={"Authorization": "Bearer nonsense"}) as r:
        assert r.status == 401
    async with client.get("/api/users/me", headers={"Authorization": "Basic abc"}) as response:
        assert response.status == 401


async def test_unknown_and_ambiguous_paths_are_404(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    for path in ("/api/nothing-here", "/elsewhere", "/api/products/..%2Fusers/me"):
        async with client.get(path, headers=bearer(user_token)) as response:
            assert response.status == 404, path
            body = await response.json()
            assert body["code"] == "not_found" and body["requestId"]


async def test_wrong_method_is_405_in_the_envelope(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    async with client.post("/api/users/me", headers=bearer(user_token)) as response:
        assert response.status == 405
        assert (await response.json())["code"] == "method_not_allowed"


async def test_methods_nobody_serves_are_405_with_allow_even_without_a_token(
    client: aiohttp.ClientSession,
) -> None:
    """No handler exists for them, so there is nothing to sign in for: the service says
    which methods it does allow there."""
    for method, path in [("PUT", "/api/products"), ("DELETE", f"/api/products/{uuid.uuid4()}"),
                         ("TRACE", "/api/orders"), ("PROPFIND", "/api/admin/orders")]:
        async with client.request(method, path) as response:
            assert response.status == 405, (method, path)
            assert (await response.json())["code"] == "method_not_allowed"
            assert "GET" in response.headers["Allow"]


async def test_standard_methods_on_guarded_paths_still_need_a_token_first(
    client: aiohttp.ClientSession,
) -> None:
    async with client.put("/api/orders") as response:
        assert response.status == 401


async def test_bodies_over_one_mebibyte_are_413(client: aiohttp.ClientSession) -> None:
    big = b'{"email": "' + b"a" * (1024 * 1024) + b'"}'
    async with client.post(
        "/api/users/register", data=big, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await response.json())["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(17):
            yield b" " * 65536

    async with client.post("/api/users/register", data=chunks()) as response:
        assert response.status == 413


async def _raw_request(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes no HTTP client library would, and reads the whole answer."""
    url = yarl.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 9000 + b"\r\n",  # a header line over 8 KiB
        b"".join(b"X-H%d: v\r\n" % n for n in range(200)),  # more than 128 headers
        b"X-Nul: a\x00b\r\n",
    ],
    ids=["header-over-8-KiB", "200-headers", "nul-in-header"],
)
async def test_requests_over_the_header_limits_are_400_in_the_envelope(
    system: System, headers: bytes
) -> None:
    request = b"GET /api/products HTTP/1.1\r\nHost: shop\r\n" + headers + b"\r\n"
    status, answer_headers, body = await _raw_request(system.gateway_url, request)
    assert status == 400
    assert answer_headers["Content-Type"].startswith("application/json")
    envelope = orjson.loads(body)
    assert envelope["success"] is False and envelope["code"] == "bad_request"
    assert envelope["requestId"]


async def test_request_ids_are_kept_when_sane_and_replaced_otherwise(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    async with client.get(
        "/api/users/me", headers={**bearer(user_token), "X-Request-Id": "trace-123.abc"}
    ) as response:
        assert response.headers["X-Request-Id"] == "trace-123.abc"
    async with client.get("/api/users/me", headers={"X-Request-Id": "bad id\twith junk"}) as r:
        assert r.status == 401
        generated = r.headers["X-Request-Id"]
        assert generated != "bad id\twith junk" and len(generated) == 32
        assert (await r.json())["requestId"] == generated
    async with client.get("/api/ping") as response:
        assert response.headers["X-Request-Id"]


async def test_query_strings_and_headers_pass_through(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    async with client.get(
        "/api/users/sessions?limit=5&q=a%20b%2Fc", headers=bearer(user_token)
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")


async def test_ping_reports_every_service(client: aiohttp.ClientSession, system: System) -> None:
    await wait_until_ready(client)
    async with client.get("/api/ping") as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["status"] == "ok" and body["success"] is True
    assert body["services"] == {name: "ok" for name in SERVICE_PATHS}


async def test_a_down_upstream_is_503_and_named_by_ping(databases) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"
    async with running_system(databases, gateway={"orders_url": closed}) as own, \
            aiohttp.ClientSession(base_url=own.gateway_url) as client:
        async with client.get("/api/products") as response:
            assert response.status == 503
            assert response.headers["Retry-After"]
            body = await response.json()
            assert body["code"] == "service_unavailable" and "orders" in body["error"]
        async with client.get("/api/ping") as response:
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "degraded"
            assert body["services"]["orders"] == "unreachable"
            assert "orders" in body["error"]


async def test_auth_down_is_503_not_401(system: System) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"
    async with another_gateway(system, auth_url=closed) as url, \
            aiohttp.ClientSession(base_url=url) as client, \
            client.get("/api/users/me", headers=bearer("x" * 43)) as response:
        assert response.status == 503
        assert (await response.json())["code"] == "service_unavailable"


@pytest.fixture
async def slow_upstream() -> AsyncIterator[str]:
    """A service that answers too late, to see the gateway give up on it."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_an_upstream_timeout_is_504(databases, slow_upstream: str) -> None:
    async with running_system(
        databases, gateway={"orders_url": slow_upstream, "upstream_timeout_seconds": 0.3}
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client, client.get(
        "/api/products"
    ) as response:
        assert response.status == 504
        assert (await response.json())["code"] == "gateway_timeout"


async def test_compressed_and_corrupt_bodies(client: aiohttp.ClientSession) -> None:
    payload = orjson.dumps({"email": unique_email(), "password": "correct horse", "name": "Gz"})
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with client.post(
        "/api/users/register", data=gzip.compress(payload), headers=headers
    ) as response:
        assert response.status == 201
    async with client.post(
        "/api/users/register", data=b"\x1f\x8b not really gzip", headers=headers
    ) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_json"


async def test_nul_characters_are_422_not_a_database_error(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    async with client.post(
        "/api/users/register",
        json={"email": unique_email(), "password": "correct horse", "name": "A\x00B"},
    ) as response:
        assert response.status == 422
        assert [d["field"] for d in (await response.json())["details"]] == ["name"]
    async with client.post(
        "/api/users/login", json={"email": "a\x00b@example.com", "password": "x"}
    ) as response:
        assert response.status == 422


async def test_any_malformed_token_is_401(client: aiohttp.ClientSession) -> None:
    for token in ("x" * 300, "short", "x" * 43):
        async with client.get("/api/users/me", headers=bearer(token)) as response:
            assert response.status == 401, token[:10]


async def test_gateway_paths_refuse_other_methods_with_405(client: aiohttp.ClientSession) -> None:
    async with client.post("/api/ping") as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        assert (await response.json())["code"] == "method_not_allowed"


async def test_the_query_string_reaches_the_service(
    client: aiohttp.ClientSession, admin_token: str
) -> None:
    for _ in range(2):
        await create_product(client, admin_token, stock=1)
    async with client.get("/api/products?limit=1") as response:
        data = (await response.json())["data"]
    assert len(data["items"]) == 1 and data["nextCursor"]
