"""Contract §4 Orders: stock cannot be hoarded. At most MAX_OPEN_ORDERS_PER_USER orders of a
user in `placed`, under concurrency too; an order left `placed` too long is cancelled by the
system, its stock given back, with the events and notification of any cancellation."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from services.orders.orders.expiry import expire_overdue_orders
from shopkit.app import POOL_KEY
from tests.events import watch_events
from tests.harness import (
    System,
    call,
    create_product,
    eventually,
    new_customer,
    running_system,
)
from tests.system_tests.support import lock_held


async def _place(
    client: aiohttp.ClientSession, token: str, address_id: str, product_id: str,
    key: str | None = None,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    return await call(client, "POST", "/api/orders", token, {
        "addressId": address_id, "items": [{"productId": product_id, "quantity": 1}],
    }, **headers)


async def _stock(client: aiohttp.ClientSession, product_id: str) -> int:
    return (await call(client, "GET", f"/api/products/{product_id}"))[1]["data"]["stock"]


async def _open_orders_agree(admin_db: asyncpg.Pool, user_id: str) -> None:
    """The count placing relies on is the orders' own count."""
    counted, placed = await admin_db.fetchrow(
        """
        SELECT coalesce((SELECT placed FROM orders.open_orders WHERE user_id = $1), 0),
               (SELECT count(*) FROM orders.orders WHERE user_id = $1 AND status = 'placed')
        """,
        user_id,
    )
    assert counted == placed


@dataclass
class Shopper:
    client: aiohttp.ClientSession
    token: str
    address: str
    user_id: str
    product: str


@asynccontextmanager
async def shopper(
    databases: dict, admin_token: str, **orders: Any
) -> AsyncIterator[Shopper]:
    """A customer with an address, and a product with 100 in stock, in a system of its own
    with these orders settings."""
    async with running_system(databases, orders=orders) as own, aiohttp.ClientSession(
        base_url=own.gateway_url
    ) as client:
        token, address = await new_customer(client)
        user_id = (await call(client, "GET", "/api/users/me", token))[1]["data"]["id"]
        product = (await create_product(client, admin_token, stock=100))["id"]
        yield Shopper(client, token, address, user_id, product)


async def test_a_user_has_at_most_so_many_orders_placed_at_once(
    databases, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    async with shopper(databases, admin_token, max_open_orders_per_user=3) as it:
        client, token, address, product = it.client, it.token, it.address, it.product
        placed = [(await _place(client, token, address, product, key=f"k{n}"))[1]["data"]["id"]
                  for n in range(3)]

        status, body = await _place(client, token, address, product)
        assert status == 409 and body["code"] == "too_many_open_orders", body
        assert await _stock(client, product) == 97, "a refused order takes no stock"
        status, body = await _place(client, token, address, product, key="k0")
        assert status == 201 and body["data"]["id"] == placed[0], "a retry gets its order back"

        await call(client, "POST", f"/api/orders/{placed[0]}/cancel", token)
        assert (await _place(client, token, address, product))[0] == 201
        assert (await _place(client, token, address, product))[0] == 409
        status, _ = await call(client, "POST", f"/api/admin/orders/{placed[1]}/status",
                               admin_token, {"status": "confirmed"})
        assert status == 200
        assert (await _place(client, token, address, product))[0] == 201, "confirmed: not open"
        await _open_orders_agree(admin_db, it.user_id)

        other, other_address = await new_customer(client)
        assert (await _place(client, other, other_address, product))[0] == 201, "per user"


async def test_concurrent_placements_never_pass_the_cap(
    databases, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    async with shopper(databases, admin_token, max_open_orders_per_user=3) as it:
        client, token, address, product = it.client, it.token, it.address, it.product
        results = await asyncio.gather(
            *(_place(client, token, address, product) for _ in range(12))
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [201] * 3 + [409] * 9
        assert await _stock(client, product) == 97
        # Cancellations and placements of one user at once: no deadlock, the count holds.
        cancel = [call(client, "POST", f"/api/orders/{body['data']['id']}/cancel", token)
                  for status, body in results if status == 201]
        again = [_place(client, token, address, product) for _ in range(6)]
        outcomes = await asyncio.gather(*cancel, *again)
        assert {status for status, _ in outcomes} <= {200, 201, 409}, outcomes
        await _open_orders_agree(admin_db, it.user_id)


async def test_an_order_left_placed_too_long_is_cancelled_by_the_system(
    databases, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    async with shopper(databases, admin_token, placed_order_ttl_seconds=1,
                       placed_order_sweep_interval_seconds=0.2) as it:
        client, token, address, product = it.client, it.token, it.address, it.product
        async with watch_events("order.status_changed") as events:
            _, left = await _place(client, token, address, product)
            _, taken_on = await _place(client, token, address, product)
            status, _ = await call(client, "POST",
                                   f"/api/admin/orders/{taken_on['data']['id']}/status",
                                   admin_token, {"status": "confirmed"})
            assert status == 200
            left_id = left["data"]["id"]

            async def expired() -> dict | None:
                _, body = await call(client, "GET", f"/api/orders/{left_id}", token)
                return body["data"] if body["data"]["status"] == "cancelled" else None

            order = await eventually(expired, deadline_seconds=15)
            changes = await events.bodies_until(
                lambda bodies: any(b["data"]["orderId"] == left_id for b in bodies)
            )
        assert order["history"][-1]["note"] == "expired"
        assert order["history"][-1]["changedBy"] is None
        assert order["version"] == 2
        event = next(b for b in changes if b["data"]["orderId"] == left_id)
        assert event["data"]["from"] == "placed" and event["data"]["to"] == "cancelled"
        assert event["data"]["note"] == "expired"
        assert await _stock(client, product) == 99, "the expired order's unit went back"
        _, confirmed = await call(client, "GET", f"/api/orders/{taken_on['data']['id']}", token)
        assert confirmed["data"]["status"] == "confirmed", "only placed orders expire"
        await _open_orders_agree(admin_db, it.user_id)

        async def notified() -> bool:
            _, body = await call(client, "GET", "/api/notifications", token)
            return any(n["orderId"] == left_id and "cancelled" in n["title"]
                       for n in body["data"]["items"])

        await eventually(notified)


async def test_a_user_at_the_cap_is_refused_without_waiting_for_any_product(
    databases, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """Refused on what the count says: the products are not locked (a user at the cap cannot
    keep popular products' rows busy with orders that will be refused)."""
    async with shopper(databases, admin_token, max_open_orders_per_user=1) as it:
        client, token, address, product = it.client, it.token, it.address, it.product
        assert (await _place(client, token, address, product))[0] == 201
        async with lock_held(admin_db, "SELECT FROM orders.products WHERE id = $1 FOR UPDATE",
                             uuid.UUID(product)), asyncio.timeout(5):
            status, body = await _place(client, token, address, product)
        assert status == 409 and body["code"] == "too_many_open_orders"


async def test_an_order_that_cannot_expire_holds_up_no_other(
    system: System, client: aiohttp.ClientSession, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    token, address = await new_customer(client)
    product = (await create_product(client, admin_token, stock=10))["id"]
    stuck = (await _place(client, token, address, product))[1]["data"]["id"]
    due = (await _place(client, token, address, product))[1]["data"]["id"]
    await admin_db.execute(  # both a week old, the stuck one the older
        "UPDATE orders.orders SET created_at = now() - interval '8 days' + "
        "CASE WHEN id = $1 THEN interval '0' ELSE interval '1 second' END"
        " WHERE id = ANY($2::uuid[])", uuid.UUID(stuck), [uuid.UUID(stuck), uuid.UUID(due)],
    )
    trigger = f"stuck_{uuid.uuid4().hex[:8]}"
    await admin_db.execute(  # any failure of one order's move, whatever it is
        f"""
        CREATE FUNCTION orders.{trigger}() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'this order cannot move'; END $$;
        CREATE TRIGGER {trigger} BEFORE UPDATE ON orders.orders FOR EACH ROW
        WHEN (OLD.id = '{stuck}') EXECUTE FUNCTION orders.{trigger}();
        """
    )
    try:
        await expire_overdue_orders(system.apps["orders"][POOL_KEY], ttl_seconds=86400)
        statuses = {r["id"]: r["status"] for r in await admin_db.fetch(
            "SELECT id::text, status FROM orders.orders WHERE id = ANY($1::uuid[])",
            [uuid.UUID(stuck), uuid.UUID(due)],
        )}
    finally:
        await admin_db.execute(
            f"DROP TRIGGER {trigger} ON orders.orders; DROP FUNCTION orders.{trigger}()"
        )
    assert statuses == {stuck: "placed", due: "cancelled"}
