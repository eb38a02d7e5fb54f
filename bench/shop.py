"""The shop's data for the load: customers with a session and an address, products, and what
the bench reads back from the database (stock, orders, tracking)."""

import asyncio
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from bench.isolation import bench_database_dsn
from bench.processes import PORTS
from shopkit.identity import IDENTITY_HEADER, Identity, IdentityKey, Role, sign_identity


@dataclass
class Customer:
    token: str
    user_id: str
    session_id: str
    address_id: str


async def request_json(session: aiohttp.ClientSession, method: str, path: str,
                       token: str | None = None, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, path, json=body, headers=headers) as response:
        answer = await response.json()
        assert response.status < 300, (method, path, answer)
        return answer["data"]


async def new_customer(session: aiohttp.ClientSession, admin: bool = False) -> Customer:
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = secrets.token_urlsafe(12)
    user = await request_json(session, "POST", "/api/users/register",
                       body={"email": email, "password": password, "name": "Bench"})
    if admin:
        await _promote(user["id"])
    login = await request_json(session, "POST", "/api/admin/login" if admin else "/api/users/login",
                        body={"email": email, "password": password})
    sessions = await request_json(session, "GET", "/api/users/sessions", login["token"])
    current = next(s["id"] for s in sessions["items"] if s["current"])
    address = await request_json(session, "POST", "/api/addresses", login["token"], {
        "recipient": "Bench", "line1": "1 Main St", "city": "Springfield", "postalCode": "1",
        "country": "US"})
    return Customer(login["token"], user["id"], current, address["id"])


async def _promote(user_id: str) -> None:
    conn = await asyncpg.connect(bench_database_dsn())
    try:
        await conn.execute("UPDATE auth.users SET role = 'admin' WHERE id = $1::uuid", user_id)
    finally:
        await conn.close()


async def vacuumed() -> bool:
    """Vacuums and analyses the bench's database, as autovacuum would have by now; says
    whether autovacuum is on. Where it is off (as in this project's CI machines), each
    scenario would otherwise start on every dead row the ones before it left: the outbox
    alone leaves one per event."""
    conn = await asyncpg.connect(bench_database_dsn())
    try:
        await conn.execute("VACUUM ANALYZE")
        return await conn.fetchval("SELECT current_setting('autovacuum')::bool")
    finally:
        await conn.close()


async def prepare(customers: int, products: int, stock: int) -> tuple[list[Customer], list[str]]:
    base = f"http://127.0.0.1:{PORTS['gateway']}"
    async with aiohttp.ClientSession(base_url=base) as session:
        admin = await new_customer(session, admin=True)
        people = [await new_customer(session) for _ in range(customers)]
        items = [
            (await request_json(session, "POST", "/api/admin/products", admin.token, {
                "sku": f"BENCH-{secrets.token_hex(6)}", "name": "Bench item",
                "priceCents": 100, "stock": stock}))["id"]
            for _ in range(products)
        ]
    return people, items


async def stock_and_orders(customers: list[Customer], products: list[str]) -> tuple[int, int]:
    """Stock taken from the bench products, and units in the bench customers' orders."""
    conn = await asyncpg.connect(bench_database_dsn())
    # One snapshot for both: an order still in flight when wrk stops commits its stock and
    # its items together, and two separate reads could straddle it.
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            stock = await conn.fetchval(
                "SELECT sum(stock) FROM orders.products WHERE id = any($1::uuid[])", products)
            ordered = await conn.fetchval(
                """SELECT coalesce(sum(i.quantity), 0) FROM orders.order_items i
                   JOIN orders.orders o ON o.id = i.order_id
                   WHERE o.user_id = any($1::uuid[])""",
                [c.user_id for c in customers])
    finally:
        await conn.close()
    return int(stock), int(ordered)


async def tracking_caught_up(customers: list[Customer], deadline: float = 120) -> float | None:
    """Seconds from now until every order of the bench customers is tracked (its event went
    through the outbox, RabbitMQ and the tracking consumer), or None past the deadline. The
    events are part of what an order costs: throughput that leaves them behind is not kept."""
    return await seconds_until(
        """SELECT NOT EXISTS (SELECT FROM orders.orders o
                              WHERE o.user_id = any($1::uuid[]) AND NOT EXISTS (
                                  SELECT FROM tracking.trackings t WHERE t.order_id = o.id))""",
        [c.user_id for c in customers], deadline=deadline)


async def seconds_until(query: str, *arguments: object, deadline: float) -> float | None:
    """Seconds from now until `query` (on the bench's database) answers true, or None past
    the deadline."""
    conn = await asyncpg.connect(bench_database_dsn())
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline:
            if await conn.fetchval(query, *arguments):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        return None
    finally:
        await conn.close()


def signed(customer: Customer, service: str, path: str) -> dict[str, str]:
    """The identity the gateway would sign for this GET; good for IDENTITY_MAX_AGE_SECONDS."""
    caller = Identity(
        Role.USER, uuid.UUID(customer.user_id), uuid.UUID(customer.session_id), "127.0.0.1"
    )
    return {IDENTITY_HEADER: sign_identity(caller, _identity_key(service), "GET", path)}


def _identity_key(service: str) -> IdentityKey:
    return IdentityKey(service, os.environ[f"{service.upper()}_IDENTITY_SECRET"].encode())


