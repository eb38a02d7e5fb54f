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
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest

from services.bootstrap import SUBSCRIPTIONS, BootstrapSettings
from shopkit.bootstrap import ServiceDatabase, bootstrap, with_database
from shopkit.consumer import declare_all
from shopkit.settings import ServiceSettings
from tests.system import (
    IDENTITY_SECRET,
    RABBITMQ_URL,
    TEST_NAME,
    System,
    fresh_vhost,
    login,
    register,
    running_system,
)

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
        database_url=with_database(ADMIN_DSN, TEST_DATABASE),
        identity_secret=IDENTITY_SECRET,
        rabbitmq_url=RABBITMQ_URL,
        **overrides,
    )


def test_service_databases(password: str) -> list[ServiceDatabase]:
    """The four services as bootstrap sees them, pointed at the test database and roles."""
    host = with_database(ADMIN_DSN, TEST_DATABASE).split("@", 1)[1]
    urls = {
        f"{name}_database_url": f"postgresql://{TEST_NAME}_{name}:{password}@{host}"
        for name in ("auth", "orders", "tracking", "notifications")
    }
    return BootstrapSettings(admin_database_url=ADMIN_DSN, **urls).services()


@pytest.fixture(scope="session", autouse=True)
async def rabbitmq_vhost() -> None:
    """A fresh vhost with every consumer queue declared, as the bootstrap does."""
    await fresh_vhost()
    await declare_all(RABBITMQ_URL, SUBSCRIPTIONS)


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[dict[str, ServiceDatabase]]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
    finally:
        await conn.close()
    services = test_service_databases(secrets.token_urlsafe(16))
    await bootstrap(ADMIN_DSN, services)
    yield {service.schema: service for service in services}


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


@pytest.fixture(scope="session")
async def admin_token(system: System, admin_db: asyncpg.Pool) -> str:
    async with aiohttp.ClientSession(base_url=system.gateway_url) as session:
        email = unique_email()
        await register(session, email, password="admin password")
        await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
        return await login(session, email, password="admin password")


@pytest.fixture
async def user_token(client: aiohttp.ClientSession) -> str:
    email = unique_email()
    await register(client, email)
    return await login(client, email)
