"""A Postgres failover under load: orders keep coming while the synchronous standby is promoted
and the old primary stops. The services find the new primary by themselves, answering 503
with Retry-After meanwhile and never 500; every order answered 201 is there afterwards, the
stock adds up, and the outbox drains."""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr
from yarl import URL

from services.bootstrap import set_up_broker
from shopkit.bootstrap import ServiceDatabase, bootstrap
from tests.conftest import admin_token_for, bootstrap_settings_for_tests
from tests.harness import (
    COMPONENTS,
    RABBITMQ_URL,
    TEST_NAME,
    System,
    call,
    component_rabbitmq_url,
    create_product,
    drop_vhost,
    eventually,
    fresh_vhost,
    new_customer,
    running_system,
    wait_until_ready,
)
from tests.postgres_cluster import PrimaryAndStandby, primary_and_standby

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

DATABASE = f"{TEST_NAME}_failover"
ROLES = f"{TEST_NAME}_pf"
VHOST = f"{TEST_NAME}_failover"
STOCK = 100_000
WORKERS = 6
BEFORE_SECONDS = 4
AFTER_SECONDS = 8


@pytest.fixture
async def pair() -> AsyncIterator[PrimaryAndStandby]:
    async with primary_and_standby() as running:
        yield running


@pytest.fixture
async def failing_over_system(pair: PrimaryAndStandby) -> AsyncIterator[System]:
    """The bootstrap's database on the pair and queues in a vhost of the test's own, then the
    services and a gateway, each service given both hosts."""
    password = secrets.token_urlsafe(16)
    settings = bootstrap_settings_for_tests(password).model_copy(update={
        "admin_database_url": SecretStr(pair.admin_dsn),
        "rabbitmq_url": SecretStr(str(URL(RABBITMQ_URL).with_path(f"/{VHOST}"))),
        **{f"{name}_database_url": SecretStr(pair.dsn(f"{ROLES}_{name}:{password}", DATABASE))
           for name in ("auth", "orders", "tracking", "notifications")},
        **{f"{component}_rabbitmq_url": SecretStr(component_rabbitmq_url(component, VHOST))
           for component in COMPONENTS},
    })
    services = settings.services()
    await bootstrap(pair.admin_dsn, services)
    await fresh_vhost(VHOST)
    await set_up_broker(settings)
    databases: dict[str, ServiceDatabase] = {service.schema: service for service in services}
    overrides = {component: {"rabbitmq_url": component_rabbitmq_url(component, VHOST)}
                 for component in COMPONENTS}
    try:
        async with running_system(databases, **overrides) as system:
            yield system
    finally:
        await drop_vhost(VHOST)


@dataclass
class Load:
    placed: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    unavailable_without_retry_after: int = 0

    async def place_until(self, client: aiohttp.ClientSession, customer: tuple[str, str],
                          product: str, stop: asyncio.Event) -> None:
        token, address = customer
        while not stop.is_set():
            async with client.post(
                "/api/orders", headers={"Authorization": f"Bearer {token}"},
                json={"addressId": address, "items": [{"productId": product, "quantity": 1}]},
            ) as response:
                self.answers.append(response.status)
                if response.status == 201:
                    self.placed.append((await response.json())["data"]["id"])
                elif response.status == 503 and "Retry-After" not in response.headers:
                    self.unavailable_without_retry_after += 1
            await asyncio.sleep(0.01)


async def test_a_failover_under_load_loses_no_acknowledged_order_and_never_answers_500(
    pair: PrimaryAndStandby, failing_over_system: System
) -> None:
    system = failing_over_system
    admin_db = await asyncpg.connect(pair.admin_dsn.replace("/postgres?", f"/{DATABASE}?"))
    try:
        async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
            await wait_until_ready(client, deadline_seconds=60)
            admin = await admin_token_for(system.gateway_url, admin_db)
            product = (await create_product(client, admin, stock=STOCK))["id"]
            customers = [await new_customer(client) for _ in range(WORKERS)]

            load, stop = Load(), asyncio.Event()
            workers = [asyncio.create_task(load.place_until(client, c, product, stop))
                       for c in customers]
            try:
                await asyncio.sleep(BEFORE_SECONDS)
                before = len(load.placed)
                await pair.fail_over()
                await asyncio.sleep(AFTER_SECONDS)
            finally:
                stop.set()
                await asyncio.gather(*workers)
            assert len(load.placed) > before > 0, "orders were placed before and after"
            assert set(load.answers) <= {201, 503}, sorted(set(load.answers))
            assert load.unavailable_without_retry_after == 0
            # The services found the new primary by themselves: orders go through again.
            status, _ = await call(client, "POST", "/api/orders", customers[0][0], {
                "addressId": customers[0][1], "items": [{"productId": product, "quantity": 1}],
            })
            assert status == 201
        await admin_db.close()
        admin_db = await asyncpg.connect(pair.admin_dsn.replace("/postgres?", f"/{DATABASE}?"))
        assert not await admin_db.fetchval("SELECT pg_is_in_recovery()")
        assert await admin_db.fetchval("SELECT inet_server_port()") == pair.standby.port

        placed = [uuid.UUID(order_id) for order_id in load.placed]
        found = await admin_db.fetchval(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1::uuid[])", placed
        )
        assert found == len(placed), "every order answered 201 is on the new primary"
        left, ordered = await admin_db.fetchrow(
            """
            SELECT p.stock, (SELECT coalesce(sum(quantity), 0) FROM orders.order_items
                             WHERE product_id = p.id)
            FROM orders.products p WHERE p.id = $1
            """,
            uuid.UUID(product),
        )
        assert left + ordered == STOCK, "0 oversold, 0 lost"

        async def drained() -> bool:
            return await admin_db.fetchval(
                "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL"
            ) == 0

        await eventually(drained, deadline_seconds=30)
    finally:
        await admin_db.close()
