"""Fixtures shared by every test tier.

Integration tests run against the real Postgres and RabbitMQ named by ADMIN_DATABASE_URL and
RABBITMQ_URL, in a database of their own (`shop_test`, recreated per run) with roles of their own
(`shop_test_*`), so a `make run` on the same machine is never disturbed (SHOP_TEST_NAME picks
another name).
"""

import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr
from yarl import URL

from services.bootstrap import BootstrapSettings, set_up_broker
from shopkit.bootstrap import ServiceDatabase, bootstrap, with_database
from shopkit.settings import ServiceSettings
from tests.harness import (
    COMPONENTS,
    IDENTITY_SECRETS,
    RABBITMQ_URL,
    TEST_NAME,
    TEST_SETTINGS,
    System,
    admin_login,
    component_rabbitmq_url,
    fresh_vhost,
    login,
    register,
    running_system,
)
from tests.pgbouncer import running_pgbouncer, through

S = TypeVar("S", bound=ServiceSettings)

ADMIN_DSN = os.environ.get(
    "ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_DATABASE = TEST_NAME


def scratch_settings(settings_class: type[S], **overrides: Any) -> S:
    """Settings of a service connected as the administrator to the test database: for tests
    that make a scratch schema of their own, beside the running services'."""
    return settings_class(
        port=0,
        metrics_port=0,
        database_url=with_database(ADMIN_DSN, TEST_DATABASE),
        identity_secret=IDENTITY_SECRETS["orders"],
        rabbitmq_url=RABBITMQ_URL,
        **overrides,
    )


@dataclass(frozen=True)
class OwnShop:
    services: list[ServiceDatabase]
    environment: dict[str, str]  # what .env gives make run's and make's commands


async def drop_database(name: str) -> None:
    """Drops a test's own database; `name` is made of the test run's name, never of input."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def own_shop(name: str) -> OwnShop:
    """A shop of a test's own, as `make db` makes one: a database and a vhost `name`, made
    afresh, with their roles, schemas, broker users and queues."""
    await drop_database(name)
    await fresh_vhost(name)
    administrator = URL(RABBITMQ_URL).with_path(f"/{name}").human_repr()
    settings = bootstrap_settings_for_tests(secrets.token_urlsafe(16), name, name).model_copy(
        update={"rabbitmq_url": SecretStr(administrator)})
    services = settings.services()
    await bootstrap(ADMIN_DSN, services)
    await set_up_broker(settings)
    return OwnShop(services, {
        "ADMIN_DATABASE_URL": ADMIN_DSN,
        "RABBITMQ_URL": administrator,
        **{f"{s.schema.upper()}_DATABASE_URL": s.dsn for s in services},
        **{f"{c.upper()}_RABBITMQ_URL": component_rabbitmq_url(c, name) for c in COMPONENTS},
        **{f"{service.upper()}_IDENTITY_SECRET": key
           for service, key in IDENTITY_SECRETS.items()},
    })


def bootstrap_settings_for_tests(
    password: str, database: str = TEST_DATABASE, roles: str = TEST_NAME
) -> BootstrapSettings:
    """The bootstrap's settings for the test database, roles, vhost and broker users; a
    system of its own (a cluster test's) names another `database` and `roles` prefix."""
    host = with_database(ADMIN_DSN, database).split("@", 1)[1]
    return BootstrapSettings(
        admin_database_url=ADMIN_DSN,
        rabbitmq_url=RABBITMQ_URL,
        **{
            f"{name}_database_url": f"postgresql://{roles}_{name}:{password}@{host}"
            for name in ("auth", "orders", "tracking", "notifications")
        },
        **{f"{name}_rabbitmq_url": component_rabbitmq_url(name) for name in COMPONENTS},
    )


async def fresh_databases(database: str, roles: str) -> dict[str, ServiceDatabase]:
    """A database of its own, made afresh by the bootstrap, with roles of its own."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        await conn.close()
    services = bootstrap_settings_for_tests(secrets.token_urlsafe(16), database, roles).services()
    await bootstrap(ADMIN_DSN, services)
    return {service.schema: service for service in services}


@pytest.fixture(scope="session", autouse=True)
async def rabbitmq_vhost() -> None:
    """A fresh vhost with every consumer queue declared and every component's user made, as
    the bootstrap does."""
    await fresh_vhost()
    await set_up_broker(bootstrap_settings_for_tests("unused"))


# SHOP_TEST_PGBOUNCER=1: the services (and the commands the tests run) reach the test database
# through a PgBouncer in transaction pooling mode, as a shop behind one does: asyncpg keeps no
# statements prepared, and the notifications hub LISTENs on Postgres itself.
THROUGH_PGBOUNCER = os.environ.get("SHOP_TEST_PGBOUNCER", "") not in ("", "0")
if THROUGH_PGBOUNCER:
    os.environ["DB_STATEMENT_CACHE_SIZE"] = "0"
# The port of the run's PgBouncer, once it listens (tests/integration/test_pooler.py).
PGBOUNCER_PORT: list[int] = []


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[dict[str, ServiceDatabase]]:
    direct = await fresh_databases(TEST_DATABASE, TEST_NAME)
    if not THROUGH_PGBOUNCER:
        yield direct
        return
    users = {service.role: service.password or "" for service in direct.values()}
    async with running_pgbouncer(ADMIN_DSN, users) as port:
        PGBOUNCER_PORT.append(port)
        TEST_SETTINGS.setdefault("notifications", {})["listen_database_url"] = (
            direct["notifications"].dsn
        )
        yield {name: replace(service, dsn=through(service.dsn, port))
               for name, service in direct.items()}


@pytest.fixture(scope="session")
async def admin_db(databases: dict[str, ServiceDatabase]) -> AsyncIterator[asyncpg.Pool]:
    """A superuser pool on the test database, for looking behind the services' backs."""
    pool = await asyncpg.create_pool(
        with_database(ADMIN_DSN, TEST_DATABASE), min_size=1, max_size=4
    )
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def system(databases: dict[str, ServiceDatabase]) -> AsyncIterator[System]:
    async with running_system(databases) as running:
        yield running


@pytest.fixture
async def client(system: System) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=system.gateway_url) as session:
        yield session


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def admin_token_for(base_url: str, admin_db: asyncpg.Pool | asyncpg.Connection) -> str:
    """An admin session on the system at `base_url`: an account registered there, made admin
    in its database (as `create-admin` would), signed in through the admin login."""
    async with aiohttp.ClientSession(base_url=base_url) as session:
        email = unique_email()
        await register(session, email, password="admin password")
        await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
        return await admin_login(session, email, password="admin password")


@pytest.fixture(scope="session")
async def admin_token(system: System, admin_db: asyncpg.Pool) -> str:
    return await admin_token_for(system.gateway_url, admin_db)


@pytest.fixture
async def user_token(client: aiohttp.ClientSession) -> str:
    email = unique_email()
    await register(client, email)
    return await login(client, email)
