"""The published API description: valid OpenAPI 3.1, and exactly the routes the gateway serves,
with the access the gateway enforces."""

import re
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from openapi_spec_validator import validate

from gateway.app import proxy
from gateway.docs import DOCS_POLICY
from gateway.routes import ROUTES, Access, match_route
from shopkit.app import NOT_FROM_GATEWAY
from shopkit.openapi import documented_routes
from tests.harness import SERVICES, System, another_gateway

METHODS = ("get", "put", "post", "delete", "patch")
_PLACEHOLDER = re.compile(r"\{[^}]+\}")


def concrete(path: str) -> str:
    return _PLACEHOLDER.sub(str(uuid.uuid4()), path)


async def spec_of(client: aiohttp.ClientSession) -> dict[str, Any]:
    async with client.get("/api/openapi.json") as response:
        assert response.status == 200, await response.text()
        return await response.json()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def served_by(app: web.Application) -> set[tuple[str, str]]:
    return {(method, path) for method, path, _ in documented_routes(app)}


async def test_the_merged_spec_is_valid_openapi_3_1(client: aiohttp.ClientSession) -> None:
    spec = await spec_of(client)
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_every_operation_in_the_spec_is_routed_to_a_component_that_serves_it(
    system: System, client: aiohttp.ClientSession
) -> None:
    spec = await spec_of(client)
    own = served_by(system.apps["gateway"])
    for method, path, operation in operations(spec):
        if (method, path) in own:
            continue
        route = match_route(concrete(path))
        assert route is not None and route.service is not None, path
        assert (method, path) in served_by(system.apps[route.service]), (method, path)
        enforced = route.access
        assert operation["x-access"] == enforced.value, (method, path)
        assert bool(operation["security"]) == (enforced is not Access.PUBLIC), (method, path)


async def test_every_route_the_gateway_serves_is_in_the_spec(
    system: System, client: aiohttp.ClientSession
) -> None:
    spec = await spec_of(client)
    documented = {(method, path) for method, path, _ in operations(spec)}
    gateway = system.apps["gateway"]
    for route in gateway.router.routes():
        # The proxy's catch-all is covered below; Swagger UI's assets are files, not API.
        if route.method == "HEAD" or route.handler is proxy or _is_static(route.resource):
            continue
        assert (route.method, route.resource.canonical) in documented
    for name in SERVICES:
        for route in system.apps[name].router.routes():
            path = route.resource.canonical
            if route.method == "HEAD" or not path.startswith("/api/"):
                continue
            assert (route.method, path) in documented, (name, route.method, path)
            served = match_route(concrete(path))
            assert served is not None and served.service == name, path
    for table_entry in ROUTES:
        if table_entry.service is not None:
            assert any(table_entry.pattern.match(concrete(path)) for _, path, _ in
                       operations(spec)), table_entry.pattern.pattern


def _is_static(resource: Any) -> bool:
    return isinstance(resource, web.StaticResource)


async def test_each_operation_answers_anonymous_callers_as_documented(
    client: aiohttp.ClientSession,
) -> None:
    """Asked without a token, an operation that needs one says 401 (so the gateway routes it
    and guards it); a public one is found and allowed."""
    spec = await spec_of(client)
    for method, path, operation in operations(spec):
        body = {} if method in ("POST", "PUT", "PATCH") else None
        async with client.request(method, concrete(path), json=body) as response:
            status = response.status
            await response.read()
        if operation["x-access"] == "public":
            assert status not in (401, 403, 405), (method, path, status)
            assert status != 404 or "{" in path, (method, path)
        else:
            assert status == 401, (method, path, status)
        assert str(status) in operation["responses"], (method, path, status)


async def test_swagger_ui_is_served_with_its_assets_from_the_gateway(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/api/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == DOCS_POLICY
        page = await response.text()
    assert '"/api/openapi.json"' in page
    assert "<script>" not in page  # no inline script: the policy runs this origin's files only
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/api/docs/"), asset  # nothing from the internet
        async with client.get(asset) as response:
            assert response.status == 200, asset
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert await response.read()


async def test_a_service_describes_itself_but_still_answers_only_the_gateway(
    system: System,
) -> None:
    async with aiohttp.ClientSession(base_url=system.service_urls["orders"]) as direct:
        async with direct.get("/openapi.json") as response:
            assert response.status == 200
            assert "/api/orders" in (await response.json())["paths"]
        async with direct.get("/api/products") as response:
            assert response.status == 401
            assert (await response.json())["error"] == NOT_FROM_GATEWAY


async def test_the_spec_is_503_not_partial_while_a_service_cannot_be_asked(
    system: System,
) -> None:
    async with (
        another_gateway(system, tracking_url="http://127.0.0.1:9") as url,
        aiohttp.ClientSession(base_url=url) as client,
        client.get("/api/openapi.json") as response,
    ):
        body = await response.json()
        assert response.status == 503, body
        assert body["code"] == "service_unavailable"
        assert "tracking" in body["error"]
        assert response.headers["Retry-After"]
