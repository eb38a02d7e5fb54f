"""Fixtures of the system tests: the real processes, launched once for the tests that share
them, and their logs shown when a test fails."""

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shopkit.bootstrap import ServiceDatabase
from tests.conftest import admin_token_for
from tests.processes import LaunchedSystem, launched_system


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        funcargs = getattr(item, "funcargs", {}).values()
        # A fixture and the one it wraps may hand out the same system: its logs once.
        launched = {id(v): v for v in funcargs if isinstance(v, LaunchedSystem)}
        for system in launched.values():
            report.sections.append(("process logs", system.processes.logs()))


# Two of every component, shared by the tests: gateway n in front of instance n of each service.
INSTANCES = 2
# Room for the graceful-shutdown test's requests in flight, each holding a connection.
ORDERS_POOL = 10


@pytest.fixture(scope="package")
async def shared_launch(
    databases: dict[str, ServiceDatabase], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LaunchedSystem]:
    async with launched_system(
        databases, tmp_path_factory.mktemp("processes"), instances=INSTANCES,
        env_overrides={"orders": {"DB_POOL_MAX_SIZE": str(ORDERS_POOL)}},
    ) as launched:
        yield launched


@pytest.fixture
async def launched(shared_launch: LaunchedSystem) -> LaunchedSystem:
    """The shared processes, every one running and ready: a test that failed half-way through
    a restart leaves none dead or shutting down for the next."""
    await shared_launch.revive()
    return shared_launch


@pytest.fixture(scope="package")
async def launched_admin(shared_launch: LaunchedSystem, admin_db: asyncpg.Pool) -> str:
    return await admin_token_for(shared_launch.gateway_url, admin_db)
