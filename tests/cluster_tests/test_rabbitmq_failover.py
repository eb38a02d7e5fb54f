"""Losing a node of a three-node RabbitMQ cluster under load: the node that leads
`tracking.orders` stops while orders keep coming. Every order is tracked exactly once, no
event is lost, and no consumer stops for more than 10 s."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from services.bootstrap import set_up_broker
from shopkit.app import CONSUMERS_KEY
from shopkit.bootstrap import ServiceDatabase, with_database
from tests.conftest import (
    ADMIN_DSN,
    admin_token_for,
    bootstrap_settings_for_tests,
    fresh_databases,
)
from tests.harness import (
    BROKER_PASSWORDS,
    COMPONENTS,
    TEST_NAME,
    System,
    call,
    create_product,
    eventually,
    new_customer,
    running_system,
    wait_until_ready,
)
from tests.rabbitmq_cluster import Node, RabbitMQCluster, rabbitmq_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

WORKERS = 6
BEFORE_SECONDS = 5
AFTER_SECONDS = 10
LONGEST_PAUSE_SECONDS = 10


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RabbitMQCluster]:
    async with rabbitmq_cluster(tmp_path / "rabbitmq") as running:
        yield running


DATABASE = f"{TEST_NAME}_rabbitmq"


@pytest.fixture
async def databases_of_its_own() -> AsyncIterator[dict[str, ServiceDatabase]]:
    """A database of the test's own: no relay of the shared test system (which publishes to
    the machine's broker) takes its events."""
    yield await fresh_databases(DATABASE, f"{TEST_NAME}_rq")
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def its_db(databases_of_its_own: dict[str, ServiceDatabase]) -> AsyncIterator[
    asyncpg.Pool
]:
    pool = await asyncpg.create_pool(with_database(ADMIN_DSN, DATABASE), min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


@dataclass
class Clustered:
    system: System
    leader: Node  # of tracking.orders, the node every component connects to first


@pytest.fixture
async def clustered(
    cluster: RabbitMQCluster, databases_of_its_own: dict[str, ServiceDatabase]
) -> AsyncIterator[Clustered]:
    """The bootstrap's queues and users on the cluster, then the services and a gateway, each
    given every node, the leader of tracking.orders first: so that losing it makes every
    consumer move to another node."""
    settings = bootstrap_settings_for_tests("unused").model_copy(update={
        "rabbitmq_url": SecretStr(cluster.url("guest", "guest")),
        "rabbitmq_management_url": SecretStr(cluster.management_url(cluster.nodes[0])),
        **{f"{component}_rabbitmq_url": SecretStr(_url(cluster, component))
           for component in COMPONENTS},
    })
    await set_up_broker(settings)
    leader = await cluster.leader_of("tracking.orders")
    overrides = {component: {"rabbitmq_url": _url(cluster, component, first=leader)}
                 for component in COMPONENTS}
    async with running_system(databases_of_its_own, **overrides) as system:
        yield Clustered(system, leader)


def _url(cluster: RabbitMQCluster, component: str, first: Node | None = None) -> str:
    return cluster.url(f"{TEST_NAME}_{component}", BROKER_PASSWORDS[component], first=first)


class Pauses:
    """How long each consumer went without consuming, sampled every 50 ms."""

    def __init__(self, system: System) -> None:
        self._consumers = [
            consumer for name in ("tracking", "notifications")
            for consumer in system.apps[name][CONSUMERS_KEY]
        ]
        self._since: dict[int, float] = {}
        self.longest = 0.0

    async def watch(self) -> None:
        while True:
            now = time.monotonic()
            for consumer in self._consumers:
                if consumer.is_consuming:
                    self._since.pop(id(consumer), None)
                else:
                    started = self._since.setdefault(id(consumer), now)
                    self.longest = max(self.longest, now - started)
            await asyncio.sleep(0.05)


async def _place_until(
    client: aiohttp.ClientSession, customers: list[tuple[str, str]], product: str,
    stop: asyncio.Event, placed: list[str], answers: list[int],
) -> None:
    n = 0
    while not stop.is_set():
        token, address = customers[n % len(customers)]
        n += 1
        status, body = await call(client, "POST", "/api/orders", token, {
            "addressId": address, "items": [{"productId": product, "quantity": 1}],
        })
        answers.append(status)
        if status == 201:
            placed.append(body["data"]["id"])
        await asyncio.sleep(0.02)


async def test_losing_the_node_that_leads_tracking_loses_no_event_and_stops_no_consumer_long(
    cluster: RabbitMQCluster, clustered: Clustered, its_db: asyncpg.Pool
) -> None:
    system = clustered.system
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        await wait_until_ready(client, deadline_seconds=60)
        admin = await admin_token_for(system.gateway_url, its_db)
        product = (await create_product(client, admin, stock=1_000_000))["id"]
        customers = [await new_customer(client) for _ in range(WORKERS)]

        pauses = Pauses(system)
        watching = asyncio.create_task(pauses.watch())
        stop = asyncio.Event()
        placed: list[str] = []
        answers: list[int] = []
        load = [asyncio.create_task(_place_until(client, customers, product, stop, placed,
                                                 answers))
                for _ in range(WORKERS)]
        try:
            await asyncio.sleep(BEFORE_SECONDS)
            await cluster.stop(clustered.leader)
            stopped_at = len(placed)
            await asyncio.sleep(AFTER_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*load)
        assert len(placed) > stopped_at > 0, "orders were placed before and after the stop"
        assert set(answers) == {201}, "placing an order needs no broker"

        orders = [uuid.UUID(order_id) for order_id in placed]

        async def all_tracked() -> bool:
            return await its_db.fetchval(
                "SELECT count(*) FROM tracking.trackings WHERE order_id = ANY($1::uuid[])",
                orders,
            ) == len(orders)

        await eventually(all_tracked, deadline_seconds=60)
        watching.cancel()

    entries = await its_db.fetch(
        """
        SELECT order_id, count(*) AS entries FROM tracking.timeline
        WHERE order_id = ANY($1::uuid[]) GROUP BY order_id
        """,
        orders,
    )
    assert len(entries) == len(orders) and {row["entries"] for row in entries} == {1}
    assert await its_db.fetchval(
        "SELECT count(*) FROM orders.outbox WHERE aggregate_id = ANY($1::text[])"
        " AND published_at IS NULL",
        placed,
    ) == 0, "every event went out"
    # Every consumer was on the node that stopped, and moved to another.
    assert 0 < pauses.longest < LONGEST_PAUSE_SECONDS, pauses.longest
    # And no event waited longer than that to be applied: the relay and the queue moved too.
    slowest = await its_db.fetchval(
        """
        SELECT max(extract(epoch FROM t.created_at - o.created_at)) FROM tracking.trackings t
        JOIN orders.orders o ON o.id = t.order_id WHERE t.order_id = ANY($1::uuid[])
        """,
        orders,
    )
    assert slowest < LONGEST_PAUSE_SECONDS, slowest
