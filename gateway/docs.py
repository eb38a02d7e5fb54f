"""The API as clients see it: `GET /api/openapi.json` merges the gateway's own operations with
each service's public ones; `GET /api/docs` is Swagger UI, its assets served from the installed
swagger-ui-py package (nothing fetched from the internet)."""

import asyncio
from importlib.resources import files
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.recent import Recent
from gateway.upstream import HTTP_KEY, SETTINGS_KEY, UPSTREAMS_KEY
from shopkit import errors
from shopkit.openapi import (
    OPENAPI_PATH,
    SPEC_KEY,
    Access,
    describe_at_startup,
    documented,
    merge,
)

DOCS_PATH = "/api/docs"
SPEC_PATH = "/api/openapi.json"
ASSETS_PATH = f"{DOCS_PATH}/static"
SPEC_TIMEOUT_SECONDS = 5.0
MERGED_SPEC_KEY = web.AppKey("merged_spec", Recent)

INIT_PATH = f"{DOCS_PATH}/swagger-init.js"
# Swagger UI's own index page, pointed at the merged spec. No inline script: the start-up
# script is a file, so the page's policy (DOCS_POLICY) allows scripts of this origin only.
_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>shop API</title>
  <link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-url="{SPEC_PATH}"></div>
  <script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{INIT_PATH}"></script>
</body>
</html>
"""
_INIT = """window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: root.dataset.url, dom_id: "#swagger-ui" });
});
"""
# The docs share the front end's origin, where a session's token is kept: their pages run
# this origin's scripts only (Swagger UI styles itself inline), and no file of them is read
# as another type than it is served as.
DOCS_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))


@documented("The OpenAPI 3.1 description of this API", Access.PUBLIC, tag="docs")
async def api_description(request: web.Request) -> web.Response:
    """Asked of the services (at most once per `fanout_cache_seconds`, whoever calls), so it
    matches the versions running."""
    merged: bytes = await request.app[MERGED_SPEC_KEY].get()
    return web.Response(body=merged, content_type="application/json")


def _merged_description(app: web.Application) -> Recent[bytes]:
    async def ask() -> bytes:
        upstreams = app[UPSTREAMS_KEY]
        specs = await asyncio.gather(
            *(_service_description(app, name, upstream.url) for name, upstream in upstreams.items())
        )
        return orjson.dumps(merge(app[SPEC_KEY], dict(zip(upstreams, specs, strict=True))))

    return Recent(ask, app[SETTINGS_KEY].fanout_cache_seconds)


async def _service_description(app: web.Application, name: str, base_url: str) -> dict[str, Any]:
    try:
        async with app[HTTP_KEY].get(
            base_url + OPENAPI_PATH, timeout=aiohttp.ClientTimeout(total=SPEC_TIMEOUT_SECONDS)
        ) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        raise errors.ServiceUnavailable(
            f"The {name} service cannot describe its API right now."
        ) from exc


@documented("Swagger UI for this API", Access.PUBLIC, tag="docs", media_type="text/html")
async def api_docs(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


@documented("Swagger UI's start-up script", Access.PUBLIC, tag="docs",
            media_type="text/javascript")
async def api_docs_init(request: web.Request) -> web.Response:
    return web.Response(text=_INIT, content_type="text/javascript")


async def _docs_policy(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` signal: the docs' pages and files under their policy."""
    if request.path == DOCS_PATH or request.path.startswith(f"{DOCS_PATH}/"):
        response.headers["Content-Security-Policy"] = DOCS_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"


def add_docs(app: web.Application) -> None:
    describe_at_startup(app, "shop API")

    async def cache(app: web.Application) -> None:
        app[MERGED_SPEC_KEY] = _merged_description(app)

    app.on_startup.append(cache)
    app.router.add_get(SPEC_PATH, api_description)
    app.router.add_get(DOCS_PATH, api_docs)
    app.router.add_get(INIT_PATH, api_docs_init)
    app.on_response_prepare.append(_docs_policy)
    app.router.add_static(ASSETS_PATH, str(files("swagger_ui") / "static"))
