"""Products and stock: public catalogue, admin changes, stock never below zero."""

import asyncio
import uuid

import aiohttp
import pytest

from tests.harness import call, create_product, walk_pages


async def test_the_catalogue_is_public(client: aiohttp.ClientSession, admin_token: str) -> None:
    product = await create_product(client, admin_token, stock=7, price_cents=999)
    assert set(product) == {"id", "sku", "name", "priceCents", "stock"}
    status, body = await call(client, "GET", f"/api/products/{product['id']}")
    assert status == 200 and body["data"] == product
    status, body = await call(client, "GET", "/api/products?limit=100")
    assert status == 200 and "nextCursor" in body["data"]
    status, _ = await call(client, "GET", f"/api/products/{uuid.uuid4()}")
    assert status == 404


async def test_the_catalogue_pages_by_sku(client: aiohttp.ClientSession, admin_token: str) -> None:
    for _ in range(3):
        await create_product(client, admin_token, stock=1)
    skus = [p["sku"] for p in await walk_pages(client, "/api/products")]
    assert skus == sorted(skus) and len(skus) == len(set(skus)) >= 3


async def test_only_admins_change_products(
    client: aiohttp.ClientSession, admin_token: str, user_token: str
) -> None:
    product = await create_product(client, admin_token, stock=1)
    for method, path, payload in [
        ("POST", "/api/admin/products", {"sku": "X1", "name": "x", "priceCents": 1, "stock": 1}),
        ("PATCH", f"/api/admin/products/{product['id']}", {"name": "hacked"}),
        ("POST", f"/api/admin/products/{product['id']}/stock", {"delta": 5}),
    ]:
        assert (await call(client, method, path, user_token, payload))[0] == 403
        assert (await call(client, method, path, None, payload))[0] == 401
    body = (await call(client, "GET", f"/api/products/{product['id']}"))[1]
    assert body["data"] == product


async def test_admin_updates_and_adjusts_stock(
    client: aiohttp.ClientSession, admin_token: str
) -> None:
    product = await create_product(client, admin_token, stock=5, price_cents=100)
    path = f"/api/admin/products/{product['id']}"
    status, body = await call(client, "PATCH", path, admin_token, {"priceCents": 250})
    assert status == 200 and body["data"]["priceCents"] == 250
    assert body["data"]["name"] == product["name"]
    status, body = await call(client, "PATCH", path, admin_token, {"name": "Renamed"})
    assert status == 200 and body["data"]["name"] == "Renamed"
    status, body = await call(client, "PATCH", path, admin_token, {})
    assert status == 422

    status, body = await call(client, "POST", f"{path}/stock", admin_token, {"delta": 3})
    assert status == 200 and body["data"]["stock"] == 8
    status, body = await call(client, "POST", f"{path}/stock", admin_token, {"delta": -8})
    assert status == 200 and body["data"]["stock"] == 0
    status, body = await call(client, "POST", f"{path}/stock", admin_token, {"delta": -1})
    assert status == 409 and body["code"] == "insufficient_stock"
    status, body = await call(client, "GET", f"/api/products/{product['id']}")
    assert body["data"]["stock"] == 0

    unknown = f"/api/admin/products/{uuid.uuid4()}"
    assert (await call(client, "PATCH", unknown, admin_token, {"name": "x"}))[0] == 404
    assert (await call(client, "POST", f"{unknown}/stock", admin_token, {"delta": 1}))[0] == 404


async def test_parallel_stock_decrements_never_go_below_zero(
    client: aiohttp.ClientSession, admin_token: str
) -> None:
    product = await create_product(client, admin_token, stock=10)
    path = f"/api/admin/products/{product['id']}/stock"
    results = await asyncio.gather(
        *(call(client, "POST", path, admin_token, {"delta": -3}) for _ in range(8))
    )
    assert sorted(status for status, _ in results) == [200] * 3 + [409] * 5
    body = (await call(client, "GET", f"/api/products/{product['id']}"))[1]
    assert body["data"]["stock"] == 1


async def test_duplicate_skus_are_409(client: aiohttp.ClientSession, admin_token: str) -> None:
    product = await create_product(client, admin_token, stock=1)
    status, body = await call(
        client, "POST", "/api/admin/products", admin_token,
        {"sku": product["sku"], "name": "Again", "priceCents": 1, "stock": 1},
    )
    assert status == 409 and body["code"] == "sku_taken"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sku": "", "name": "n", "priceCents": 1, "stock": 1}, "sku"),
        ({"sku": "A1", "name": "", "priceCents": 1, "stock": 1}, "name"),
        ({"sku": "A1", "name": "n", "priceCents": -1, "stock": 1}, "priceCents"),
        ({"sku": "A1", "name": "n", "priceCents": "12", "stock": 1}, "priceCents"),
        ({"sku": "A1", "name": "n", "priceCents": 1.5, "stock": 1}, "priceCents"),
        ({"sku": "A1", "name": "n", "priceCents": 1, "stock": -2}, "stock"),
        ({"sku": "A1", "name": "n", "priceCents": 1}, "stock"),
    ],
)
async def test_invalid_products_are_422(
    client: aiohttp.ClientSession, admin_token: str, payload: dict, field: str
) -> None:
    status, body = await call(client, "POST", "/api/admin/products", admin_token, payload)
    assert status == 422 and [d["field"] for d in body["details"]] == [field]
