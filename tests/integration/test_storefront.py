"""The front end as the gateway serves it (contract §8): its page and assets, their caching,
the Content-Security-Policy, and nothing fetched from elsewhere."""

import re

import aiohttp

from gateway.storefront import CONTENT_SECURITY_POLICY, Storefront


async def assets_of(client: aiohttp.ClientSession) -> list[str]:
    async with client.get("/") as response:
        page = await response.text()
    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)


async def test_the_page_is_served_with_a_strict_policy_and_revalidated(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        etag = response.headers["ETag"]
        assert "<script" in await response.text()
    async with client.get("/", headers={"If-None-Match": etag}) as again:
        assert again.status == 304


async def test_assets_are_versioned_and_kept_for_good(client: aiohttp.ClientSession) -> None:
    assets = await assets_of(client)
    assert {url.rsplit("/", 1)[1] for url in assets} == {"app.css", "app.js"}
    for url in assets:
        async with client.get(url) as response:
            assert response.status == 200
            assert response.content_type in {"text/javascript", "text/css"}
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # the scripts' own imports resolve under the same version
    version = assets[0].split("/")[2]
    async with client.get(f"/assets/{version}/api.js") as response:
        assert response.status == 200


async def test_another_version_or_file_is_not_found(client: aiohttp.ClientSession) -> None:
    version = (await assets_of(client))[0].split("/")[2]
    for url in ("/assets/0000000000000000/app.js", f"/assets/{version}/index.html",
                f"/assets/{version}/..%2fstorefront.py", f"/assets/{version}/nothing.js"):
        async with client.get(url) as response:
            assert response.status == 404, url
            body = await response.json()
            assert body["success"] is False and body["code"] == "not_found"


async def test_nothing_is_fetched_from_elsewhere(client: aiohttp.ClientSession) -> None:
    """No CDN: the page and every script and style name no other origin."""
    version = (await assets_of(client))[0].split("/")[2]
    async with client.get("/") as response:
        texts = [await response.text()]
    for name in sorted(Storefront.load().assets):
        async with client.get(f"/assets/{version}/{name}") as response:
            assert response.status == 200, name
            texts.append(await response.text())
    for text in texts:
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text)


async def test_the_page_takes_no_other_method(client: aiohttp.ClientSession) -> None:
    async with client.post("/", data=b"{}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET,HEAD"
