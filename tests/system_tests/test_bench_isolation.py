"""`make bench` leaves the shop alone: it writes its customers, products, orders and events
into a database and a RabbitMQ virtual host of its own, never into those `make run` serves."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from bench.isolation import BENCH_NAME, bench_environment
from services.bootstrap import SUBSCRIPTIONS
from shopkit.bootstrap import with_database
from tests.conftest import ADMIN_DSN, drop_database, own_shop
from tests.harness import (
    TEST_NAME,
    drop_vhost,
)
from tests.processes import ROOT

pytestmark = pytest.mark.system
SHOP = f"{TEST_NAME}_benchshop"  # the shop `make run` would serve, for this test
SHOP_SCHEMAS = ["auth", "orders", "tracking", "notifications"]
BENCH_DEADLINE_SECONDS = 240


def test_every_database_and_broker_url_moves_to_the_bench_s_own() -> None:
    shop = {
        "ADMIN_DATABASE_URL": "postgresql://postgres:pw@db:5432/postgres",
        "ORDERS_DATABASE_URL": "postgresql://shop_orders:pw@db1:5432,db2:5432/shop"
                               "?target_session_attrs=read-write",
        "RABBITMQ_URL": "amqp://guest:guest@mq:5672/",
        "GATEWAY_RABBITMQ_URL": "amqp://gw:pw@mq1:5672/shop,amqp://gw:pw@mq2:5672/shop",
        "ORDERS_IDENTITY_SECRET": "kept",
    }
    moved = bench_environment(shop)
    assert moved == {
        "ADMIN_DATABASE_URL": shop["ADMIN_DATABASE_URL"],
        "ORDERS_DATABASE_URL": f"postgresql://shop_orders:pw@db1:5432,db2:5432/{BENCH_NAME}"
                               "?target_session_attrs=read-write",
        "RABBITMQ_URL": f"amqp://guest:guest@mq:5672/{BENCH_NAME}",
        "GATEWAY_RABBITMQ_URL": f"amqp://gw:pw@mq1:5672/{BENCH_NAME},"
                                f"amqp://gw:pw@mq2:5672/{BENCH_NAME}",
        "ORDERS_IDENTITY_SECRET": "kept",
    }


@pytest.mark.parametrize("name, value", [
    ("AUTH_DATABASE_URL", f"postgresql://a:pw@db/{BENCH_NAME}"),
    ("RABBITMQ_URL", f"amqp://guest:guest@mq/{BENCH_NAME}"),
])
def test_a_shop_that_already_is_the_bench_s_is_refused(name: str, value: str) -> None:
    with pytest.raises(SystemExit, match="the bench's own"):
        bench_environment({name: value})


@pytest.fixture
async def shop_environment() -> AsyncIterator[dict[str, str]]:
    """A shop of its own, bootstrapped, with what `make run` reads from .env."""
    environment = (await own_shop(SHOP)).environment
    yield environment
    await drop_vhost(SHOP)
    await drop_vhost(BENCH_NAME)
    for database in (SHOP, BENCH_NAME):
        await drop_database(database)


async def shop_digest() -> dict[str, str]:
    """Every table of the shop's schemas, as a digest of its rows."""
    conn = await asyncpg.connect(with_database(ADMIN_DSN, SHOP))
    try:
        tables = await conn.fetch(
            """SELECT format('%I.%I', table_schema, table_name) AS name
               FROM information_schema.tables
               WHERE table_schema = any($1) AND table_type = 'BASE TABLE'""", SHOP_SCHEMAS)
        return {
            t["name"]: await conn.fetchval(
                # The names come from the catalog, quoted by the server.
                f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                f" FROM {t['name']} t")
            for t in tables
        }
    finally:
        await conn.close()


async def waiting_in_shop_queues(environment: dict[str, str]) -> dict[str, int]:
    connection = await aio_pika.connect(environment["RABBITMQ_URL"])
    try:
        channel = await connection.channel()
        return {name: (await channel.declare_queue(name, passive=True))
                .declaration_result.message_count
                for name in (s.queue for s in SUBSCRIPTIONS)}
    finally:
        await connection.close()


async def test_the_bench_writes_nothing_into_the_shop_make_run_serves(
    shop_environment: dict[str, str],
) -> None:
    conn = await asyncpg.connect(with_database(ADMIN_DSN, SHOP))
    try:  # something of the shop's own, for the bench to leave as it is
        await conn.execute(
            "INSERT INTO orders.products (id, sku, name, price_cents, stock)"
            " VALUES ($1, 'SHOP-1', 'The shop''s own', 500, 7)", uuid.uuid4())
    finally:
        await conn.close()
    before = await shop_digest(), await waiting_in_shop_queues(shop_environment)

    inherited = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    bench = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--only", "1", "--runs", "1", "--seconds", "1",
        env={**inherited, **shop_environment}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(bench.communicate(), BENCH_DEADLINE_SECONDS)
    assert bench.returncode == 0, (output.decode()[-4000:],
                                   _tail(ROOT / ".bench" / "system.log"))

    assert (await shop_digest(), await waiting_in_shop_queues(shop_environment)) == before
    conn = await asyncpg.connect(with_database(ADMIN_DSN, BENCH_NAME))
    try:  # the bench did write: into its own database
        assert await conn.fetchval(
            "SELECT count(*) FROM orders.products WHERE name = 'Bench item'") > 0
    finally:
        await conn.close()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""
