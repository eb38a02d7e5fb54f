"""The shop's web front end (contract §8): `GET /` serves its page, `/assets/<version>/<file>`
its scripts and styles, from gateway/static. No build step and nothing from the internet.

The assets are read once at start. Their URLs carry one version, a digest of all of them,
so a browser keeps them for good (`immutable`) and a release changes every URL at once; the
scripts' own relative imports stay within that version. The page itself is revalidated on
every visit (`no-cache` with an ETag), so a new release is seen at once.
"""

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from shopkit import errors
from shopkit.openapi import Access, documented

PAGE_PATH = "/"
ASSETS_PATH = "/assets"
_PLACEHOLDER = "@ASSETS@"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
}
# Scripts and styles from this origin only, nothing inline, no frames, no plugins; the API is
# the only place the page talks to. The favicon is an empty data: URL.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Storefront:
    version: str
    page: bytes
    etag: str
    assets: dict[str, Asset]

    @classmethod
    def load(cls) -> "Storefront":
        folder = files("gateway") / "static"
        sources = {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}
        digest = hashlib.sha256()
        for name in sorted(sources):
            digest.update(name.encode() + b"\0" + sources[name] + b"\0")
        version = digest.hexdigest()[:16]
        page = sources.pop("index.html").replace(
            _PLACEHOLDER.encode(), f"{ASSETS_PATH}/{version}".encode()
        )
        assets = {
            name: Asset(body, _TYPES[suffix])
            for name, body in sources.items()
            if (suffix := name[name.rfind("."):]) in _TYPES
        }
        return cls(version, page, f'"{version}"', assets)


STOREFRONT_KEY = web.AppKey("storefront", Storefront)


@documented("The shop's web front end: its page (304 to If-None-Match while unchanged)",
            Access.PUBLIC, tag="front end", media_type="text/html")
async def page(request: web.Request) -> web.Response:
    storefront = request.app[STOREFRONT_KEY]
    headers = {**_PAGE_HEADERS, "ETag": storefront.etag}
    if storefront.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=storefront.page, content_type="text/html", charset="utf-8",
                        headers=headers)


@documented("A script or style of the front end, at the version the page names",
            Access.PUBLIC, tag="front end", media_type="text/javascript")
async def asset(request: web.Request) -> web.Response:
    storefront = request.app[STOREFRONT_KEY]
    found = storefront.assets.get(request.match_info["name"])
    # Another release's asset is gone: the page that asked for it is stale and reloads fine.
    if found is None or request.match_info["version"] != storefront.version:
        raise errors.NotFound()
    return web.Response(body=found.body, content_type=found.content_type, charset="utf-8",
                        headers=_ASSET_HEADERS)


def add_storefront(app: web.Application) -> None:
    app[STOREFRONT_KEY] = Storefront.load()
    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(ASSETS_PATH + "/{version}/{name}", asset)
