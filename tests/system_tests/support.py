"""What the system tests check behind the services' backs (the superuser pool sees every schema),
and the locks they hold to keep a request in flight."""

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from tests.harness import bearer, call, eventually, new_customer

# What a request may get while the service behind the gateway is dying or starting again:
# an error status, or no answer at all (None).
OUTAGE: frozenset[int | None] = frozenset({None, 502, 503, 504})


@dataclass
class Load:
    """What a load got back: the orders the clients were told exist (id -> {product: qty}) and
    any answer no outage explains."""

    placed: dict[str, dict[str, int]] = field(default_factory=dict)
    answers: Counter[int | None] = field(default_factory=Counter)
    unexpected: list[tuple[str, int | None, Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Customer:
    token: str
    address_id: str
    user_id: UUID
    orders: list[str] = field(default_factory=list)  # those the customer was told exist


async def customer(client: aiohttp.ClientSession) -> Customer:
    """A new customer, signed in, with a default address."""
    token, address_id = await new_customer(client)
    status, body = await call(client, "GET", "/api/users/me", token)
    assert status == 200, body
    return Customer(token, address_id, UUID(body["data"]["id"]))


async def attempt(
    client: aiohttp.ClientSession, method: str, path: str, token: str, json: Any = None
) -> tuple[int | None, Any]:
    """One request that may fail because a process died: (None, error) then."""
    try:
        async with asyncio.timeout(15), client.request(
            method, path, json=json, headers=bearer(token)
        ) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, repr(exc)


async def place_one(
    load: Load, client: aiohttp.ClientSession, buyer: Customer, product_ids: list[str],
    rng: random.Random, allowed: frozenset[int | None] = OUTAGE,
) -> str | None:
    """One order of one or two random lines; its id when the client was told it exists."""
    lines = {p: rng.randint(1, 3) for p in rng.sample(product_ids, rng.randint(1, 2))}
    status, body = await attempt(client, "POST", "/api/orders", buyer.token, {
        "addressId": buyer.address_id,
        "items": [{"productId": p, "quantity": q} for p, q in lines.items()],
    })
    load.answers[status] += 1
    if status == 201:
        load.placed[body["data"]["id"]] = lines
        return body["data"]["id"]
    if status not in allowed:
        load.unexpected.append(("place", status, body))
    return None


async def place_orders(
    load: Load, client: aiohttp.ClientSession, buyer: Customer, product_ids: list[str],
    rng: random.Random,
) -> None:
    """Orders until `load.stop` is set."""
    while not load.stop.is_set():
        if await place_one(load, client, buyer, product_ids, rng) is None:
            await asyncio.sleep(0.02)  # pacing while the service is away, not a wait for it


# The superuser's view --------------------------------------------------------------------


async def half_done_orders(admin_db: asyncpg.Pool, users: list[UUID]) -> list[dict]:
    """Orders of these users missing a part of what placing or changing them writes: items that
    add up to the total, one history row and one outbox event per version."""
    rows = await admin_db.fetch(
        """
        SELECT o.id, o.version, o.total_cents,
               (SELECT sum(unit_price_cents * quantity) FROM orders.order_items i
                WHERE i.order_id = o.id) AS items_total,
               (SELECT count(*) FROM orders.order_history h WHERE h.order_id = o.id) AS history,
               (SELECT count(*) FROM orders.outbox e WHERE e.aggregate_id = o.id::text) AS events
        FROM orders.orders o WHERE o.user_id = ANY($1::uuid[])
        """,
        users,
    )
    return [
        dict(r) for r in rows
        if r["items_total"] != r["total_cents"] or r["history"] != r["version"]
        or r["events"] != r["version"]
    ]


async def ordered_items(admin_db: asyncpg.Pool, order_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = await admin_db.fetch(
        "SELECT order_id::text, product_id::text, quantity FROM orders.order_items"
        " WHERE order_id = ANY($1::uuid[])",
        order_ids,
    )
    items: dict[str, dict[str, int]] = {}
    for r in rows:
        items.setdefault(r["order_id"], {})[r["product_id"]] = r["quantity"]
    return items


async def stock_books(admin_db: asyncpg.Pool, initial: dict[str, int]) -> dict[str, tuple]:
    """Per product: (initial stock - stock now, quantity in orders not cancelled); the two are
    equal when no order was half taken and nothing oversold."""
    rows = await admin_db.fetch(
        """
        SELECT p.id::text AS id, p.stock,
               coalesce(sum(i.quantity) FILTER (WHERE o.status <> 'cancelled'), 0) AS sold
        FROM orders.products p
        LEFT JOIN orders.order_items i ON i.product_id = p.id
        LEFT JOIN orders.orders o ON o.id = i.order_id
        WHERE p.id = ANY($1::uuid[]) GROUP BY p.id
        """,
        list(initial),
    )
    return {r["id"]: (initial[r["id"]] - r["stock"], r["sold"]) for r in rows}


async def unsettled_orders(admin_db: asyncpg.Pool, users: list[UUID]) -> list[dict]:
    """Orders whose events have not all been applied yet: tracking at the order's version with
    one timeline entry per version, one notification per status change, the outbox published.
    Empty once every event arrived exactly once."""
    rows = await admin_db.fetch(
        """
        SELECT o.id, o.version, t.version AS tracked,
               (SELECT count(*) FROM tracking.timeline l
                WHERE l.order_id = o.id AND l.version IS NOT NULL) AS entries,
               (SELECT count(*) FROM notifications.notifications n
                WHERE n.order_id = o.id AND n.type = 'order_status') AS notified,
               (SELECT count(*) FROM orders.outbox e
                WHERE e.aggregate_id = o.id::text AND e.published_at IS NULL) AS unpublished
        FROM orders.orders o LEFT JOIN tracking.trackings t ON t.order_id = o.id
        WHERE o.user_id = ANY($1::uuid[])
        """,
        users,
    )
    return [
        dict(r) for r in rows
        if r["tracked"] != r["version"] or r["entries"] != r["version"]
        or r["notified"] != r["version"] - 1 or r["unpublished"]
    ]


async def wait_settled(
    admin_db: asyncpg.Pool, users: list[UUID], deadline_seconds: float = 20
) -> None:
    """Polls until every event of these users' orders has been applied; fails naming the
    orders still owed something."""
    left: list[dict] = []

    async def settled() -> bool:
        left[:] = await unsettled_orders(admin_db, users)
        return not left

    try:
        await eventually(settled, deadline_seconds)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still unsettled: {left[:5]}") from None


# Keeping a request in flight -------------------------------------------------------------


@contextlib.asynccontextmanager
async def lock_held(admin_db: asyncpg.Pool, statement: str, *args: Any) -> AsyncIterator[None]:
    """Runs `statement` (one taking a lock) in a transaction kept open for the block: requests
    that need the lock wait in the service until the block ends."""
    async with admin_db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(statement, *args)
            yield
        finally:
            await transaction.rollback()


async def waiting_on_locks(admin_db: asyncpg.Pool, application: str) -> int:
    """How many of a service's database sessions wait for a lock (services connect with their
    name as application_name)."""
    return await admin_db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = $1 AND wait_event_type = 'Lock'",
        application,
    )


async def refuses_connections(url: str) -> bool:
    """True once nothing listens on the URL's port any more."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except ConnectionError:  # refused, or reset when the listener closed with it pending
        return True
    writer.close()
    await writer.wait_closed()
    return False
