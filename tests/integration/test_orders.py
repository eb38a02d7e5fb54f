"""Orders: stock taken all or nothing with no oversell, idempotency, the status machine."""

import asyncio
import itertools
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.harness import (
    address_payload,
    call,
    create_address,
    create_product,
    eventually,
    new_customer,
    place_order,
    running_system,
    walk_pages,
)

STATUSES = ["placed", "confirmed", "shipped", "in_transit", "out_for_delivery", "delivered",
            "cancelled"]
# The contract's machine, written out: forward only (skipping allowed), cancel from the first two.
ALLOWED = {
    "placed": {"confirmed", "shipped", "in_transit", "out_for_delivery", "delivered", "cancelled"},
    "confirmed": {"shipped", "in_transit", "out_for_delivery", "delivered", "cancelled"},
    "shipped": {"in_transit", "out_for_delivery", "delivered"},
    "in_transit": {"out_for_delivery", "delivered"},
    "out_for_delivery": {"delivered"},
    "delivered": set(),
    "cancelled": set(),
}


async def _order(
    client: aiohttp.ClientSession, token: str, address_id: str, lines: list[tuple[str, int]],
    key: str | None = None, note: str | None = None,
) -> tuple[int, Any]:
    payload: dict[str, Any] = {
        "addressId": address_id,
        "items": [{"productId": p, "quantity": q} for p, q in lines],
    }
    if note is not None:
        payload["note"] = note
    headers = {"Idempotency-Key": key} if key else {}
    return await call(client, "POST", "/api/orders", token, payload, **headers)


async def _stock(client: aiohttp.ClientSession, product_id: str) -> int:
    return (await call(client, "GET", f"/api/products/{product_id}"))[1]["data"]["stock"]


async def test_an_order_copies_prices_names_and_address(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token, city="Gotham")
    a = await create_product(client, admin_token, stock=5, price_cents=1000)
    b = await create_product(client, admin_token, stock=5, price_cents=250)
    status, body = await _order(
        client, user_token, address["id"], [(a["id"], 2), (b["id"], 3)], note="Leave at door"
    )
    assert status == 201, body
    order = body["data"]
    assert set(order) == {
        "id", "userId", "status", "items", "totalCents", "shippingAddress", "note", "history",
        "createdAt", "updatedAt", "version",
    }
    assert order["status"] == "placed" and order["version"] == 1
    assert order["totalCents"] == 2 * 1000 + 3 * 250 and order["note"] == "Leave at door"
    assert order["items"] == [
        {"productId": a["id"], "sku": a["sku"], "name": a["name"], "unitPriceCents": 1000,
         "quantity": 2},
        {"productId": b["id"], "sku": b["sku"], "name": b["name"], "unitPriceCents": 250,
         "quantity": 3},
    ]
    copied = {k: v for k, v in address.items() if k not in ("isDefault", "createdAt")}
    assert order["shippingAddress"] == copied and copied["city"] == "Gotham"
    assert order["history"] == [
        {"status": "placed", "note": None, "changedBy": order["userId"],
         "changedAt": order["history"][0]["changedAt"]}
    ]
    assert await _stock(client, a["id"]) == 3 and await _stock(client, b["id"]) == 2

    # Later changes to the product and the address do not rewrite the order.
    await call(client, "PATCH", f"/api/admin/products/{a['id']}", admin_token,
               {"priceCents": 5, "name": "Renamed"})
    await call(client, "PUT", f"/api/addresses/{address['id']}", user_token,
               address_payload(city="Metropolis"))
    status, body = await call(client, "GET", f"/api/orders/{order['id']}", user_token)
    assert status == 200 and body["data"] == order


async def test_thirty_parallel_orders_for_ten_in_stock_sell_exactly_ten(
    databases, client: aiohttp.ClientSession, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """Across two orders instances (each behind its own gateway) sharing one database."""
    product = await create_product(client, admin_token, stock=10)
    buyers = [await new_customer(client) for _ in range(6)]
    async with running_system(databases) as second, aiohttp.ClientSession(
        base_url=second.gateway_url
    ) as other_client:
        clients = [client, other_client]
        results = await asyncio.gather(
            *(_order(clients[i % 2], *buyers[i % 6], [(product["id"], 1)]) for i in range(30))
        )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 10 + [409] * 20
    assert all(b["code"] == "insufficient_stock" for s, b in results if s == 409)
    assert await _stock(client, product["id"]) == 0
    sold = await admin_db.fetchval(
        "SELECT coalesce(sum(quantity), 0) FROM orders.order_items WHERE product_id = $1",
        uuid.UUID(product["id"]),
    )
    assert sold == 10


async def test_a_multi_line_order_with_one_short_line_takes_nothing(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    plenty = await create_product(client, admin_token, stock=50)
    scarce = await create_product(client, admin_token, stock=1)
    also = await create_product(client, admin_token, stock=50)
    status, body = await _order(
        client, user_token, address["id"], [(plenty["id"], 5), (scarce["id"], 2), (also["id"], 1)]
    )
    assert status == 409 and body["code"] == "insufficient_stock"
    assert body["details"] == [
        {"productId": scarce["id"], "sku": scarce["sku"], "requested": 2, "available": 1}
    ]
    assert scarce["sku"] in body["error"]
    for product, stock in ((plenty, 50), (scarce, 1), (also, 50)):
        assert await _stock(client, product["id"]) == stock
    status, body = await call(client, "GET", "/api/orders", user_token)
    assert body["data"]["items"] == []


async def test_an_order_waiting_for_a_product_checks_the_stock_the_change_left(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """The statement that places the order started when 5 were in stock: a change committed
    while it waited for the product's lock must refuse the order."""
    product, (status, body) = await _order_3_while_the_stock_changes(
        client, user_token, admin_token, admin_db, stock=5, changed_to=1
    )
    assert status == 409 and body["code"] == "insufficient_stock"
    assert body["details"] == [
        {"productId": product["id"], "sku": product["sku"], "requested": 3, "available": 1}
    ]
    assert await _stock(client, product["id"]) == 1
    assert (await call(client, "GET", "/api/orders", user_token))[1]["data"]["items"] == []


async def test_an_order_waiting_for_a_product_gets_the_stock_given_back_meanwhile(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """The statement started when 1 was in stock; a cancellation gave 3 back while it waited.
    The order is placed: the stock left is reckoned from the row as locked, not as the
    statement's snapshot had it (that was below zero, and failed the CHECK: a 500)."""
    product, (status, body) = await _order_3_while_the_stock_changes(
        client, user_token, admin_token, admin_db, stock=1, changed_to=4
    )
    assert status == 201, body
    assert await _stock(client, product["id"]) == 1


async def _order_3_while_the_stock_changes(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool,
    stock: int, changed_to: int,
) -> tuple[dict, tuple[int, dict]]:
    """Another transaction holds the product, as a cancellation does, while an order for 3 is
    placed; once the order's statement waits on the row, the stock changes and commits."""
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=stock)
    product_id = uuid.UUID(product["id"])
    async with admin_db.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT FROM orders.products WHERE id = $1 FOR UPDATE", product_id)
            placing = asyncio.create_task(
                _order(client, user_token, address["id"], [(product["id"], 3)])
            )
            await eventually(lambda: _waits_for_a_lock(admin_db))
            await conn.execute(
                "UPDATE orders.products SET stock = $2 WHERE id = $1", product_id, changed_to
            )
        return product, await placing


async def _waits_for_a_lock(admin_db: asyncpg.Pool) -> bool:
    return await admin_db.fetchval(
        """
        SELECT exists(SELECT FROM pg_stat_activity
                      WHERE application_name = 'orders' AND wait_event_type = 'Lock')
        """
    )


async def test_racing_retries_with_one_key_make_one_order_and_take_stock_once(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=10)
    key = f"checkout-{uuid.uuid4()}"
    results = await asyncio.gather(
        *(_order(client, user_token, address["id"], [(product["id"], 3)], key=key)
          for _ in range(12))
    )
    assert {status for status, _ in results} == {201}
    assert len({body["data"]["id"] for _, body in results}) == 1
    assert await _stock(client, product["id"]) == 7
    status, body = await call(client, "GET", "/api/orders", user_token)
    assert len(body["data"]["items"]) == 1

    status, body = await _order(client, user_token, address["id"], [(product["id"], 4)], key=key)
    assert status == 409 and body["code"] == "idempotency_key_reused"
    assert await _stock(client, product["id"]) == 7

    # Keys belong to their user: another user's same key is a new order.
    other, other_address = await new_customer(client)
    status, body = await _order(client, other, other_address, [(product["id"], 3)], key=key)
    assert status == 201 and await _stock(client, product["id"]) == 4


async def test_a_retry_gets_its_order_back_even_once_the_stock_is_gone(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=3)
    key = f"checkout-{uuid.uuid4()}"
    first = await _order(client, user_token, address["id"], [(product["id"], 3)], key=key)
    assert first[0] == 201 and await _stock(client, product["id"]) == 0

    again = await _order(client, user_token, address["id"], [(product["id"], 3)], key=key)
    assert again == first
    assert await _stock(client, product["id"]) == 0


async def test_order_input_is_validated(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=500)
    p = product["id"]
    cases = [
        ({"addressId": address["id"], "items": []}, "items"),
        ({"addressId": address["id"], "items": [{"productId": p, "quantity": 0}]},
         "items.0.quantity"),
        ({"addressId": address["id"], "items": [{"productId": p, "quantity": 101}]},
         "items.0.quantity"),
        ({"addressId": address["id"], "items": [{"productId": p, "quantity": 1}] * 2}, "items"),
        ({"addressId": "nope", "items": [{"productId": p, "quantity": 1}]}, "addressId"),
        ({"addressId": address["id"],
          "items": [{"productId": str(uuid.uuid4()), "quantity": 1}]}, "items.0.productId"),
    ]
    for payload, field in cases:
        status, body = await call(client, "POST", "/api/orders", user_token, payload)
        assert status == 422, payload
        assert [d["field"] for d in body["details"]] == [field]
    fifty_one = [{"productId": str(uuid.uuid4()), "quantity": 1} for _ in range(51)]
    status, _ = await call(
        client, "POST", "/api/orders", user_token, {"addressId": address["id"], "items": fifty_one}
    )
    assert status == 422
    status, _ = await _order(client, user_token, address["id"], [(p, 1)], key="has space")
    assert status == 422
    assert await _stock(client, p) == 500


async def test_another_users_orders_and_addresses_are_404(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    owner, owner_address = await new_customer(client)
    product = await create_product(client, admin_token, stock=5)

    status, body = await _order(client, user_token, owner_address, [(product["id"], 1)])
    assert status == 404 and body["code"] == "not_found"
    assert await _stock(client, product["id"]) == 5

    status, body = await _order(client, owner, owner_address, [(product["id"], 1)])
    order_id = body["data"]["id"]
    for method, path in [("GET", f"/api/orders/{order_id}"),
                         ("POST", f"/api/orders/{order_id}/cancel")]:
        status, body = await call(client, method, path, user_token)
        assert status == 404 and body["code"] == "not_found", path
    status, body = await call(client, "GET", f"/api/orders/{order_id}", admin_token)
    assert status == 200 and body["data"]["status"] == "placed"
    status, body = await call(client, "GET", "/api/orders", user_token)
    assert order_id not in [o["id"] for o in body["data"]["items"]]


@pytest.mark.parametrize("start", STATUSES)
async def test_every_transition_is_allowed_or_refused_as_the_contract_says(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, start: str
) -> None:
    for target in STATUSES:
        order = await place_order(client, user_token, admin_token, quantity=2)
        path = f"/api/admin/orders/{order['id']}/status"
        if start != "placed":
            status, body = await call(client, "POST", path, admin_token, {"status": start})
            assert status == 200, body
        status, body = await call(client, "POST", path, admin_token, {"status": target})
        expected = 200 if target in ALLOWED[start] else 409
        assert status == expected, f"{start} -> {target}: {body}"
        if expected == 409:
            assert body["code"] == "invalid_transition"


async def test_status_changes_keep_history_and_count_versions(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token, quantity=2)
    path = f"/api/admin/orders/{order['id']}/status"
    admin_id = (await call(client, "GET", "/api/users/me", admin_token))[1]["data"]["id"]
    for n, (target, note) in enumerate(
        [("confirmed", None), ("shipped", "Left the warehouse"), ("delivered", "Signed by Ann")],
        start=2,
    ):
        status, body = await call(client, "POST", path, admin_token, {"status": target,
                                                                      "note": note})
        assert status == 200 and body["data"]["version"] == n and body["data"]["status"] == target
    history = body["data"]["history"]
    assert [(h["status"], h["note"]) for h in history] == [
        ("placed", None), ("confirmed", None), ("shipped", "Left the warehouse"),
        ("delivered", "Signed by Ann"),
    ]
    assert [h["changedBy"] for h in history] == [order["userId"]] + [admin_id] * 3
    # The answer to a change is the order as it is stored.
    assert (await call(client, "GET", f"/api/orders/{order['id']}", admin_token))[1] == body
    status, body = await call(client, "POST", path, admin_token, {"status": "teleported"})
    assert status == 422


async def test_parallel_status_changes_each_bump_the_version_once(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token, quantity=2)
    path = f"/api/admin/orders/{order['id']}/status"
    results = await asyncio.gather(
        *(call(client, "POST", path, admin_token, {"status": s})
          for s in ["confirmed", "shipped", "in_transit", "cancelled", "delivered"] * 2)
    )
    successes = [body["data"] for status, body in results if status == 200]
    assert {status for status, _ in results} <= {200, 409}
    final = (await call(client, "GET", f"/api/orders/{order['id']}", admin_token))[1]["data"]
    assert final["version"] == 1 + len(successes) == len(final["history"])
    path_taken = [h["status"] for h in final["history"]]
    assert path_taken[0] == "placed"
    assert all(b in ALLOWED[a] for a, b in itertools.pairwise(path_taken))


async def test_a_status_change_waiting_for_the_order_moves_it_from_where_the_other_left_it(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """Its statement started while the order was placed; another change made it confirmed
    while it waited for the order's lock. It moves on from confirmed: version 3, and the
    history it answers with holds the other change too."""
    order = await place_order(client, user_token, admin_token, quantity=1)
    order_id = uuid.UUID(order["id"])
    path = f"/api/admin/orders/{order['id']}/status"
    async with admin_db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM orders.orders WHERE id = $1 FOR UPDATE", order_id)
        shipping = asyncio.create_task(call(client, "POST", path, admin_token,
                                            {"status": "shipped"}))
        await eventually(lambda: _waits_for_a_lock(admin_db))
        await _confirm_behind_the_services_back(conn, order_id, order["userId"])
    status, body = await shipping
    assert status == 200, body
    assert body["data"]["version"] == 3
    assert [h["status"] for h in body["data"]["history"]] == ["placed", "confirmed", "shipped"]
    assert (await call(client, "GET", f"/api/orders/{order['id']}", admin_token))[1] == body


async def test_a_status_change_waiting_for_the_order_checks_the_status_the_other_left(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """Cancelling a placed order is allowed; the order was confirmed and then shipped while
    the cancellation waited for its lock: refused, and no stock comes back."""
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=5)
    status, body = await _order(client, user_token, address["id"], [(product["id"], 2)])
    order_id = uuid.UUID(body["data"]["id"])
    async with admin_db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM orders.orders WHERE id = $1 FOR UPDATE", order_id)
        cancelling = asyncio.create_task(
            call(client, "POST", f"/api/orders/{order_id}/cancel", user_token)
        )
        await eventually(lambda: _waits_for_a_lock(admin_db))
        await conn.execute(
            "UPDATE orders.orders SET status = 'shipped', version = 2 WHERE id = $1", order_id
        )
    status, body = await cancelling
    assert status == 409 and body["code"] == "invalid_transition", body
    assert await _stock(client, product["id"]) == 3


async def test_a_cancellation_waiting_for_a_product_gives_back_to_the_stock_as_it_is_now(
    client: aiohttp.ClientSession, user_token: str, admin_token: str, admin_db: asyncpg.Pool
) -> None:
    """The stock was 3 when the cancellation's statement started; it became 10 while the
    statement waited for the product's lock. The 2 come back to the 10."""
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=5)
    status, body = await _order(client, user_token, address["id"], [(product["id"], 2)])
    order_id, product_id = body["data"]["id"], uuid.UUID(product["id"])
    async with admin_db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM orders.products WHERE id = $1 FOR UPDATE", product_id)
        cancelling = asyncio.create_task(
            call(client, "POST", f"/api/orders/{order_id}/cancel", user_token)
        )
        await eventually(lambda: _waits_for_a_lock(admin_db))
        await conn.execute("UPDATE orders.products SET stock = 10 WHERE id = $1", product_id)
    status, body = await cancelling
    assert status == 200, body
    assert await _stock(client, product["id"]) == 12


async def _confirm_behind_the_services_back(
    conn: asyncpg.Connection, order_id: uuid.UUID, changed_by: str
) -> None:
    """What another instance's change to confirmed writes (its event aside)."""
    await conn.execute(
        "UPDATE orders.orders SET status = 'confirmed', version = 2 WHERE id = $1", order_id
    )
    await conn.execute(
        "INSERT INTO orders.order_history (order_id, version, status, changed_by)"
        " VALUES ($1, 2, 'confirmed', $2)",
        order_id, uuid.UUID(changed_by),
    )


async def test_cancelling_gives_the_stock_back(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    a = await create_product(client, admin_token, stock=4)
    b = await create_product(client, admin_token, stock=4)
    status, body = await _order(client, user_token, address["id"], [(a["id"], 3), (b["id"], 1)])
    order_id = body["data"]["id"]
    assert await _stock(client, a["id"]) == 1
    status, body = await call(client, "POST", f"/api/orders/{order_id}/cancel", user_token)
    assert status == 200 and body["data"]["status"] == "cancelled"
    assert body["data"]["version"] == 2
    assert await _stock(client, a["id"]) == 4 and await _stock(client, b["id"]) == 4
    status, body = await call(client, "POST", f"/api/orders/{order_id}/cancel", user_token)
    assert status == 409 and body["code"] == "invalid_transition"
    assert await _stock(client, a["id"]) == 4

    status, body = await _order(client, user_token, address["id"], [(a["id"], 1)])
    shipped = body["data"]["id"]
    await call(client, "POST", f"/api/admin/orders/{shipped}/status", admin_token,
               {"status": "shipped"})
    status, body = await call(client, "POST", f"/api/orders/{shipped}/cancel", user_token)
    assert status == 409 and await _stock(client, a["id"]) == 3


async def test_listing_orders_newest_first_with_filters_and_cursor(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=50)
    ids = []
    for _ in range(5):
        ids.append((await _order(client, user_token, address["id"], [(product["id"], 1)]))[1]
                   ["data"]["id"])
    await call(client, "POST", f"/api/orders/{ids[1]}/cancel", user_token)

    seen = [o["id"] for o in await walk_pages(client, "/api/orders", user_token)]
    assert seen == list(reversed(ids))
    status, body = await call(client, "GET", "/api/orders?status=cancelled", user_token)
    assert [o["id"] for o in body["data"]["items"]] == [ids[1]]
    status, body = await call(client, "GET", "/api/orders?status=bogus", user_token)
    assert status == 422

    user_id = (await call(client, "GET", "/api/users/me", user_token))[1]["data"]["id"]
    status, body = await call(
        client, "GET", f"/api/admin/orders?userId={user_id}&status=placed&limit=100", admin_token
    )
    assert status == 200
    assert [o["id"] for o in body["data"]["items"]] == [i for i in reversed(ids) if i != ids[1]]
    status, _ = await call(client, "GET", "/api/admin/orders?userId=nope", admin_token)
    assert status == 422
    status, _ = await call(client, "GET", "/api/admin/orders", user_token)
    assert status == 403
