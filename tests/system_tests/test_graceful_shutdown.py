"""SIGTERM: a process stops listening and taking events at once, lets what is in flight finish,
exits 0 within SHUTDOWN_TIMEOUT_SECONDS, and leaves nothing undone that another process or its
own restart will not finish."""

import asyncio
import signal
import time
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from tests.harness import (
    call,
    create_product,
    event_stream,
    eventually,
    new_customer,
    place_order,
    queue_consumers,
)
from tests.processes import DEFAULT_ENV, LaunchedSystem
from tests.system_tests.support import (
    customer,
    lock_held,
    refuses_connections,
    wait_settled,
    waiting_on_locks,
)

pytestmark = pytest.mark.system

SHUTDOWN_TIMEOUT = float(DEFAULT_ENV["all"]["SHUTDOWN_TIMEOUT_SECONDS"])
IN_FLIGHT = 8  # below the pool size (10): each holds a connection while it waits


async def test_requests_in_flight_at_sigterm_all_finish_and_their_events_go_out(
    launched: LaunchedSystem, launched_admin: str, admin_db: asyncpg.Pool
) -> None:
    async with aiohttp.ClientSession(base_url=launched.gateway_url) as client:
        buyer = await customer(client)
        product = await create_product(client, launched_admin, stock=50)
        order = {"addressId": buyer.address_id,
                 "items": [{"productId": product["id"], "quantity": 1}]}
        # The product's row locked: every order for it waits in the orders service.
        async with lock_held(
            admin_db, "SELECT 1 FROM orders.products WHERE id = $1 FOR UPDATE", product["id"]
        ):
            requests = [asyncio.create_task(call(client, "POST", "/api/orders", buyer.token, order))
                        for _ in range(IN_FLIGHT)]
            await eventually(lambda: _waiting(admin_db, "orders", IN_FLIGHT))
            launched.kill("orders", signal.SIGTERM)
            stopped_at = time.monotonic()
            await eventually(lambda: refuses_connections(launched.url("orders")))
            assert launched.running("orders"), "exited with requests in flight"
        answers = await asyncio.gather(*requests)
        assert [status for status, _ in answers] == [201] * IN_FLIGHT, answers

    assert await launched.wait_exit("orders", SHUTDOWN_TIMEOUT + 2) == 0
    assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT + 1
    stock = await admin_db.fetchval("SELECT stock FROM orders.products WHERE id = $1",
                                    product["id"])
    assert stock == 50 - IN_FLIGHT
    # The relay's last pass, once the requests were done, published what they wrote.
    assert await _unpublished_events(admin_db, buyer.user_id) == 0
    await launched.start("orders")
    await wait_settled(admin_db, [buyer.user_id])


async def test_sigterm_stops_taking_events_at_once_and_the_queue_keeps_them(
    launched: LaunchedSystem, launched_admin: str, admin_db: asyncpg.Pool
) -> None:
    async with aiohttp.ClientSession(base_url=launched.gateway_url) as client:
        buyer = await customer(client)
        first = await place_order(client, buyer.token, launched_admin)
        await wait_settled(admin_db, [buyer.user_id])
        consumers = await queue_consumers("tracking.orders")
        # An admin update of the first order's tracking waits on the order's lock in tracking.
        async with lock_held(admin_db, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                             f"tracking:{first['id']}"):
            update = asyncio.create_task(call(
                client, "POST", f"/api/admin/orders/{first['id']}/tracking", launched_admin,
                {"carrier": "DHL"},
            ))
            await eventually(lambda: _waiting(admin_db, "tracking", 1))
            launched.kill("tracking", signal.SIGTERM)
            # Draining its request, the process consumes no more: its consumer is cancelled.
            await eventually(lambda: _tracking_consumers(consumers - 1), deadline_seconds=3)
            assert launched.running("tracking")
            # An event published now waits in the queue for a consumer that is not stopping.
            await place_order(client, buyer.token, launched_admin)
        status, body = await update
        assert status == 200 and body["data"]["carrier"] == "DHL", body

    assert await launched.wait_exit("tracking", SHUTDOWN_TIMEOUT + 2) == 0
    await launched.start("tracking")
    await wait_settled(admin_db, [buyer.user_id])


async def test_sigterm_ends_open_streams_and_exits_within_the_shutdown_timeout(
    launched: LaunchedSystem,
) -> None:
    async with aiohttp.ClientSession(base_url=launched.gateway_url) as client:
        token, _ = await new_customer(client)
    async with event_stream(launched.gateway_url, token) as stream:
        launched.kill("notifications", signal.SIGTERM)
        stopped_at = time.monotonic()
        # The stream ends cleanly (EOF, no reset) for the client to reconnect elsewhere.
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 1):
            while await stream.content.readline():
                pass
    assert await launched.wait_exit("notifications", SHUTDOWN_TIMEOUT + 2) == 0
    assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT + 1


async def _waiting(admin_db: asyncpg.Pool, service: str, count: int) -> bool:
    return await waiting_on_locks(admin_db, service) >= count


async def _unpublished_events(admin_db: asyncpg.Pool, user_id: UUID) -> int:
    return await admin_db.fetchval(
        "SELECT count(*) FROM orders.outbox e JOIN orders.orders o ON e.aggregate_id = o.id::text"
        " WHERE o.user_id = $1 AND e.published_at IS NULL",
        user_id,
    )


async def _tracking_consumers(count: int) -> bool:
    return await queue_consumers("tracking.orders") == count
