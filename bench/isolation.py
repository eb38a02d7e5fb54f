"""The bench's own shop: a database and a RabbitMQ virtual host of its own, made afresh for
each run, so that nothing the bench writes (its customers, its thousands of orders, its
events) reaches the shop that `make run` serves from the same Postgres and RabbitMQ.

The bench keeps the shop's roles, broker users and their passwords (both are global to the
server, and giving them other passwords would lock `make run` out); it moves every service's
database and every RabbitMQ URL's virtual host to its own.
"""

import os
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from services.bootstrap import BootstrapSettings, set_up_broker
from shopkit.bootstrap import bootstrap, database_of, with_database
from shopkit.broker import node_urls
from shopkit.broker_access import drop_vhost, vhost_of

BENCH_NAME = "shop_bench"
SERVICES = ("AUTH", "ORDERS", "TRACKING", "NOTIFICATIONS")


def bench_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` with every service's database and every RabbitMQ URL's virtual host
    moved to the bench's own. Refuses one whose shop already is the bench's: the bench
    starts by dropping its database and virtual host."""
    moved = dict(environment)
    for name, value in environment.items():
        if name in (f"{s}_DATABASE_URL" for s in SERVICES):
            if database_of(value) == BENCH_NAME:
                raise SystemExit(f"{name} names {BENCH_NAME}, the bench's own database")
            moved[name] = with_database(value, BENCH_NAME)
        elif name.endswith("RABBITMQ_URL"):
            if any(vhost_of(url) == BENCH_NAME for url in node_urls(value)):
                raise SystemExit(f"{name} names {BENCH_NAME}, the bench's own virtual host")
            moved[name] = ",".join(_with_vhost(url, BENCH_NAME) for url in node_urls(value))
    return moved


def _with_vhost(url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


async def fresh_bench_shop() -> None:
    """Drops the bench's database and virtual host, then bootstraps them as `make db` does
    the shop's. Reads the bench's environment (`bench_environment`) from os.environ."""
    admin_dsn = os.environ["ADMIN_DATABASE_URL"]
    conn = await asyncpg.connect(admin_dsn)
    try:
        # BENCH_NAME is a constant identifier, never input.
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_NAME} WITH (FORCE)")
    finally:
        await conn.close()
    settings = BootstrapSettings()
    await drop_vhost(settings.management_url, BENCH_NAME)
    await bootstrap(admin_dsn, settings.services())
    await set_up_broker(settings)


def bench_database_dsn() -> str:
    """The superuser on the bench's database."""
    return with_database(os.environ["ADMIN_DATABASE_URL"], BENCH_NAME)
