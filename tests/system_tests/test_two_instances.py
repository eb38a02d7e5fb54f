"""Two instances of every component (the shared launch), gateway n in front of instance n of
each service: a mixed load through both gateways ends in one consistent state, since all of it
lives in Postgres and RabbitMQ."""

import asyncio
import random
from collections import Counter
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from tests.conftest import unique_email
from tests.harness import (
    call,
    create_address,
    create_product,
    eventually,
    login,
    queue_consumers,
    register,
    walk_pages,
)
from tests.processes import LaunchedSystem
from tests.system_tests.support import (
    Customer,
    Load,
    place_one,
    stock_books,
    wait_settled,
)

pytestmark = pytest.mark.system

STOCK = 12
ROUNDS = 6
CUSTOMERS = 8
# The admin's walk of each order; every third one is cancelled instead (stock given back).
WALK = ["confirmed", "shipped"]

Clients = list[aiohttp.ClientSession]


async def test_two_instances_of_everything_share_sessions_stock_tracking_and_notifications(
    launched: LaunchedSystem, launched_admin: str, admin_db: asyncpg.Pool
) -> None:
    first, second = launched.gateway_urls
    async with aiohttp.ClientSession(base_url=first) as one, aiohttp.ClientSession(
        base_url=second
    ) as two:
        clients = [one, two]
        products = [(await create_product(clients[i % 2], launched_admin, stock=STOCK))["id"]
                    for i in range(3)]
        customers = await asyncio.gather(
            *(_customer(clients[i % 2], clients[(i + 1) % 2]) for i in range(CUSTOMERS))
        )
        load, history = await _mixed_load(customers, clients, products, launched_admin)

        assert not load.unexpected, load.unexpected[:5]
        assert load.answers[409] > 0, "the stock should have run out"
        assert await queue_consumers("tracking.orders") >= 2
        await _stock_adds_up(clients, products, load, history, admin_db)
        await wait_settled(admin_db, [c.user_id for c in customers])
        owners = {o: c for c in customers for o in c.orders}
        for n, (order_id, statuses) in enumerate(history.items()):
            await _tracking_shows(clients[n % 2], owners[order_id], order_id, statuses)
        for n, buyer in enumerate(customers):
            await _notified_once_per_change(clients[n % 2], clients[(n + 1) % 2], buyer, history)
        await _logout_is_seen_by_the_other_gateway(clients, customers[0], customers[1])


async def _customer(first: aiohttp.ClientSession, second: aiohttp.ClientSession) -> Customer:
    """Registered and given an address through one gateway, signed in through the other."""
    email = unique_email()
    await register(first, email)
    token = await login(second, email)
    address = await create_address(first, token)
    status, body = await call(first, "GET", "/api/users/me", token)
    assert status == 200, body
    return Customer(token, address["id"], UUID(body["data"]["id"]))


async def _mixed_load(
    customers: list[Customer], clients: Clients, products: list[str], admin: str
) -> tuple[Load, dict[str, list[str]]]:
    """Customers order through both gateways at once, against too little stock, and read
    their notifications; meanwhile the admin walks every order placed."""
    load = Load()
    placed: asyncio.Queue[str | None] = asyncio.Queue()
    walking = asyncio.create_task(_walk(placed, clients, admin))
    rng = random.Random(11)

    async def shop(n: int, buyer: Customer) -> None:
        for round_ in range(ROUNDS):
            client = clients[(n + round_) % 2]
            order_id = await place_one(load, client, buyer, products, rng, frozenset({409}))
            if order_id is not None:
                buyer.orders.append(order_id)
                await placed.put(order_id)
            status, body = await call(client, "GET", "/api/notifications", buyer.token)
            assert status == 200, body

    try:
        await asyncio.gather(*(shop(n, c) for n, c in enumerate(customers)))
    finally:
        await placed.put(None)
    return load, await walking


async def _walk(placed: asyncio.Queue, clients: Clients, admin: str) -> dict[str, list[str]]:
    """Every order's statuses, oldest first, as the admin set them, alternating gateways."""
    history: dict[str, list[str]] = {}
    while (order_id := await placed.get()) is not None:
        history[order_id] = ["placed"]
        for status in ["cancelled"] if len(history) % 3 == 0 else WALK:
            code, body = await call(clients[len(history) % 2], "POST",
                                    f"/api/admin/orders/{order_id}/status", admin,
                                    {"status": status})
            assert code == 200, body
            history[order_id].append(status)
    return history


async def _stock_adds_up(
    clients: Clients, products: list[str], load: Load, history: dict[str, list[str]],
    admin_db: asyncpg.Pool,
) -> None:
    """What is left is what was there less what kept orders took: nothing oversold, nothing
    taken twice, every cancel given back."""
    sold = Counter[str]()
    for order_id, lines in load.placed.items():
        if history[order_id][-1] != "cancelled":
            sold.update(lines)
    for n, product_id in enumerate(products):
        status, body = await call(clients[n % 2], "GET", f"/api/products/{product_id}")
        assert status == 200, body
        assert body["data"]["stock"] == STOCK - sold[product_id] >= 0, (product_id, sold)
    books = await stock_books(admin_db, dict.fromkeys(products, STOCK))
    assert all(taken == in_orders for taken, in_orders in books.values()), books


async def _tracking_shows(
    client: aiohttp.ClientSession, buyer: Customer, order_id: str, statuses: list[str]
) -> None:
    status, body = await call(client, "GET", f"/api/orders/{order_id}/tracking", buyer.token)
    assert status == 200, body
    assert [entry["status"] for entry in body["data"]["timeline"]] == statuses
    assert body["data"]["status"] == statuses[-1]


async def _notified_once_per_change(
    reader: aiohttp.ClientSession, other: aiohttp.ClientSession, buyer: Customer,
    history: dict[str, list[str]],
) -> None:
    items = await walk_pages(reader, "/api/notifications", buyer.token, limit=50)
    per_order = Counter(item["orderId"] for item in items if item["type"] == "order_status")
    assert per_order == Counter({o: len(history[o]) - 1 for o in buyer.orders}), per_order
    status, body = await call(reader, "POST", "/api/notifications/read-all", buyer.token)
    assert status == 200 and body["data"]["updated"] == len(items), body
    status, body = await call(other, "GET", "/api/notifications?unread=true", buyer.token)
    assert status == 200 and body["data"]["unreadCount"] == 0, body


async def _logout_is_seen_by_the_other_gateway(
    clients: Clients, leaving: Customer, staying: Customer
) -> None:
    status, body = await call(clients[0], "POST", "/api/users/logout", leaving.token)
    assert status == 200, body

    async def refused() -> bool:
        return (await call(clients[1], "GET", "/api/users/me", leaving.token))[0] == 401

    await eventually(refused, deadline_seconds=2)
    assert (await call(clients[1], "GET", "/api/users/me", staying.token))[0] == 200
