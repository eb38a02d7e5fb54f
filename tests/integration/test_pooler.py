"""The pass of the integration suite through PgBouncer (`make test` runs it with
SHOP_TEST_PGBOUNCER=1) goes through it: these tests check that the rest of the suite ran as a
shop behind a transaction-pooling PgBouncer runs, not on Postgres directly."""

from urllib.parse import urlsplit

import pytest

from shopkit.app import POOL_KEY
from shopkit.db import SESSION
from tests.conftest import PGBOUNCER_PORT, THROUGH_PGBOUNCER
from tests.harness import System

pytestmark = pytest.mark.skipif(
    not THROUGH_PGBOUNCER, reason="only in the pass through PgBouncer (SHOP_TEST_PGBOUNCER=1)"
)


def test_every_service_reaches_postgres_through_pgbouncer_without_prepared_statements(
    system: System,
) -> None:
    (port,) = PGBOUNCER_PORT
    for name in ("auth", "orders", "tracking", "notifications"):
        settings = system.settings[name]
        assert urlsplit(settings.database_url.get_secret_value()).port == port, name
        assert settings.db_statement_cache_size == 0, name
    listen_at = system.settings["notifications"].listen_database_url
    assert listen_at is not None and urlsplit(listen_at.get_secret_value()).port != port


async def test_the_session_settings_hold_through_pgbouncer(system: System) -> None:
    """PgBouncer passes no startup parameter but the login on: the search_path and the session
    settings a service runs with come from its role (the bootstrap stores them there)."""
    async with system.apps["orders"][POOL_KEY].acquire() as conn:
        assert await conn.fetchval("SHOW search_path") == "orders"
        for name, value in SESSION.items():
            assert await conn.fetchval(f"SELECT current_setting('{name}')") == value, name
