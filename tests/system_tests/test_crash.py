"""SIGKILL in the middle of a load: requests may fail while a process is away, but what the
database holds adds up, and every event still arrives exactly once."""

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.harness import create_product, eventually
from tests.processes import LaunchedSystem
from tests.system_tests.support import (
    OUTAGE,
    Load,
    attempt,
    customer,
    half_done_orders,
    ordered_items,
    place_orders,
    stock_books,
    wait_settled,
)

pytestmark = pytest.mark.system

STOCK = 1000
NEXT_STATUS = {"placed": "confirmed", "confirmed": "shipped", "shipped": "in_transit"}


async def change_statuses(
    load: Load, client: aiohttp.ClientSession, admin: str, rng: random.Random
) -> None:
    """An admin moving orders on (and cancelling some) until `load.stop` is set."""
    statuses: dict[str, str] = {}
    while not load.stop.is_set():
        candidates = [o for o in load.placed if statuses.get(o, "placed") in NEXT_STATUS]
        if not candidates:
            await asyncio.sleep(0.01)  # pacing until orders come in
            continue
        order_id = rng.choice(candidates)
        current = statuses.get(order_id, "placed")
        target = "cancelled" if rng.random() < 0.2 and current == "placed" else NEXT_STATUS[current]
        status, body = await attempt(
            client, "POST", f"/api/admin/orders/{order_id}/status", admin, {"status": target}
        )
        if status == 200:
            statuses[order_id] = body["data"]["status"]
        elif status == 409:
            # The other admin's change came first, or one of ours committed before a crash cut
            # its answer off: this order is left alone.
            statuses[order_id] = "unknown"
        elif status not in OUTAGE:
            load.unexpected.append(("status", status, body))
        if status != 200:
            await asyncio.sleep(0.02)


async def _placed_at_least(load: Load, count: int) -> None:
    async def enough() -> bool:
        return len(load.placed) >= count

    await eventually(enough, deadline_seconds=20)


async def _crash_and_recover(launched: LaunchedSystem, load: Load, *names: str) -> None:
    """SIGKILL, then the same processes started again while the load goes on; returns once
    the load got more orders through."""
    for name in names:
        launched.kill(name, signal.SIGKILL)
    for name in names:
        assert await launched.wait_exit(name) == -signal.SIGKILL
    await launched.start(*names)
    await _placed_at_least(load, len(load.placed) + 10)


async def test_sigkill_mid_load_loses_no_order_stock_or_event(
    launched: LaunchedSystem, launched_admin: str, admin_db: asyncpg.Pool
) -> None:
    rng = random.Random(7)
    async with _sessions(launched.gateway_urls) as clients:
        products = [(await create_product(clients[0], launched_admin, stock=STOCK))["id"]
                    for _ in range(3)]
        customers = [await customer(clients[n % 2]) for n in range(6)]
        load = Load()
        # Half the load through each gateway: gateway n calls instance n of each service.
        workers = [
            *(place_orders(load, clients[n % 2], c, products, rng)
              for n, c in enumerate(customers)),
            *(change_statuses(load, client, launched_admin, rng) for client in clients),
        ]
        running = asyncio.gather(*workers)
        try:
            await _placed_at_least(load, 15)
            await _crash_and_recover(launched, load, "orders")
            # Every tracking consumer at once: the events wait in the queue until a restart.
            await _crash_and_recover(launched, load, *launched.instances_of("tracking"),
                                     "notifications")
        finally:
            load.stop.set()
            await running

    assert not load.unexpected, load.unexpected[:5]
    users = [c.user_id for c in customers]
    # Every order a client was told about is there, whole: exactly the lines it asked for.
    assert await ordered_items(admin_db, list(load.placed)) == load.placed
    assert await half_done_orders(admin_db, users) == []
    books = await stock_books(admin_db, dict.fromkeys(products, STOCK))
    assert all(taken == sold for taken, sold in books.values()), books
    # Events of orders whose answer was lost are owed too: every order in the database counts.
    await wait_settled(admin_db, users)


@contextlib.asynccontextmanager
async def _sessions(urls: list[str]) -> AsyncIterator[list[aiohttp.ClientSession]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(aiohttp.ClientSession(base_url=url)) for url in urls
        ]
