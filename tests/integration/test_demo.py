"""`make demo`'s seeding (demo/seed.py) on the test system: the demo admin made by
`create-admin`, then a shop a newcomer can click through at once, and a second run that
changes nothing."""

import os
import secrets
from typing import Any

import aiohttp

from demo import catalogue
from demo.seed import ADMIN_EMAIL, SHOPPER_EMAIL, Account, ensure_admin, seed
from shopkit.bootstrap import ServiceDatabase
from tests.harness import (
    IDENTITY_SECRETS,
    System,
    call,
    component_rabbitmq_url,
    login,
    walk_pages,
)

ADMIN = Account(ADMIN_EMAIL, secrets.token_urlsafe(16))
SHOPPER = Account(SHOPPER_EMAIL, secrets.token_urlsafe(16))


def _auth_env(databases: dict[str, ServiceDatabase]) -> dict[str, str]:
    """The environment the test system's auth runs with, for `create-admin`."""
    return {**os.environ, "DATABASE_URL": databases["auth"].dsn,
            "IDENTITY_SECRET": IDENTITY_SECRETS["auth"],
            "RABBITMQ_URL": component_rabbitmq_url("auth")}


async def _shop_as_seen(client: aiohttp.ClientSession) -> dict[str, Any]:
    """The catalogue, and what the demo shopper, signed in, has."""
    token = await login(client, SHOPPER.email, SHOPPER.password)
    orders = await walk_pages(client, "/api/orders", token, limit=100)
    tracking = []
    for order in orders:
        status, body = await call(client, "GET", f"/api/orders/{order['id']}/tracking", token)
        assert status == 200, body
        tracking.append(body["data"])
    seen = {
        "products": await walk_pages(client, "/api/products", limit=100),
        "addresses": await walk_pages(client, "/api/addresses", token, limit=100),
        "orders": orders,
        "tracking": tracking,
    }
    assert (await call(client, "POST", "/api/users/logout", token))[0] == 200
    return seen


def _check_the_demo(seen: dict[str, Any]) -> None:
    ordered = dict(catalogue.ORDER_LINES)
    demo = {p["sku"]: p for p in seen["products"] if p["sku"].startswith("DEMO-")}
    assert len(demo) == len(catalogue.PRODUCTS) >= 30
    for product in catalogue.PRODUCTS:
        assert (demo[product.sku]["name"], demo[product.sku]["priceCents"],
                demo[product.sku]["stock"]) == (
            product.name, product.price_cents, product.stock - ordered.get(product.sku, 0))

    [address] = seen["addresses"]
    assert address["isDefault"] and address["line1"] == catalogue.ADDRESS["line1"]

    [order] = seen["orders"]
    assert order["status"] == "shipped"
    assert [h["status"] for h in order["history"]] == ["placed", "confirmed", "shipped"]
    assert {i["sku"]: i["quantity"] for i in order["items"]} == ordered
    assert order["shippingAddress"]["line1"] == catalogue.ADDRESS["line1"]

    [tracking] = seen["tracking"]
    assert tracking["status"] == "shipped" and tracking["carrier"] == catalogue.CARRIER
    assert tracking["trackingNumber"] and tracking["estimatedDelivery"]
    checkpoints = [e for e in tracking["timeline"]
                   if e["location"] == catalogue.CHECKPOINT["location"]]
    assert [(e["status"], e["note"]) for e in checkpoints] == [
        ("shipped", catalogue.CHECKPOINT["note"])
    ]
    assert tracking["timeline"][-1] == checkpoints[0]


async def test_the_demo_seeds_a_shop_to_click_through_and_a_rerun_changes_nothing(
    system: System, databases: dict[str, ServiceDatabase], client: aiohttp.ClientSession
) -> None:
    assert await ensure_admin(system.gateway_url, ADMIN, _auth_env(databases)) == "created"
    seeded = await seed(system.gateway_url, ADMIN, SHOPPER)
    assert seeded.products_added == len(catalogue.PRODUCTS)
    assert seeded.order_status == "shipped"
    first = await _shop_as_seen(client)
    _check_the_demo(first)

    assert await ensure_admin(system.gateway_url, ADMIN, _auth_env(databases)) == "exists"
    again = await seed(system.gateway_url, ADMIN, SHOPPER)
    assert (again.products_added, again.order_id) == (0, seeded.order_id)
    # The same products and stock, one address, one order at the same version, the same
    # tracking and timeline: nothing was added or moved.
    assert await _shop_as_seen(client) == first
