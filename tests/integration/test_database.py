"""What lives in Postgres: roles and schemas, migrations, the session store, the sweep."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.auth import queries
from services.auth.app import SWEEP_LOCK, sweep_expired_sessions
from services.auth.domain import token_hash
from services.orders.settings import OrdersSettings
from shopkit import db
from shopkit.app import POOL_KEY
from shopkit.bootstrap import ServiceDatabase, bootstrap, migrate, with_database
from shopkit.migrations import MigrationError, MigrationSet, apply_migrations
from tests.conftest import ADMIN_DSN, TEST_DATABASE, unique_email
from tests.harness import System, eventually, login, register

SCHEMAS = ("auth", "orders", "tracking", "notifications")


async def test_each_service_role_is_confined_to_its_own_schema(
    databases: dict[str, ServiceDatabase],
) -> None:
    for own in SCHEMAS:
        # No statement kept prepared: in one pass of the suite the role's URL is a PgBouncer.
        conn = await asyncpg.connect(databases[own].dsn, statement_cache_size=0)
        try:
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = user")
            assert await conn.fetchval(f"SELECT count(*) FROM {own}.schema_migrations") >= 1
            for other in SCHEMAS:
                if other == own:
                    continue
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {other}.schema_migrations")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(f"CREATE TABLE {other}.intruder (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE public.intruder (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE SCHEMA intruder")
        finally:
            await conn.close()


async def test_the_raw_token_is_stored_nowhere(
    system: System, client, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email)
    token = await login(client, email)
    tables = await admin_db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'auth'"
    )
    dumped = []
    for table in tables:
        rows = await admin_db.fetch(
            f'SELECT row_to_json(t)::text AS row FROM auth."{table["table_name"]}" t'
        )
        dumped.extend(row["row"] for row in rows)
    everything = "\n".join(dumped)
    assert email in everything, "the dump does see the data"
    assert token not in everything
    assert token.encode().hex() not in everything


async def _schema_snapshot(admin_db: asyncpg.Pool) -> list[tuple]:
    rows = await admin_db.fetch(
        """
        SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns
        WHERE table_schema = ANY($1::text[])
        ORDER BY 1, 2, 3
        """,
        list(SCHEMAS),
    )
    applied = []
    for schema in SCHEMAS:
        applied += await admin_db.fetch(
            f"SELECT '{schema}', track, version, checksum, applied_at "
            f"FROM {schema}.schema_migrations"
        )
    return [tuple(r) for r in rows] + [tuple(r) for r in applied]


async def test_bootstrap_and_migrations_applied_again_change_nothing(
    databases: dict[str, ServiceDatabase], admin_db: asyncpg.Pool
) -> None:
    before = await _schema_snapshot(admin_db)
    await bootstrap(ADMIN_DSN, list(databases.values()))
    for service in databases.values():
        assert await migrate(service) == []
    assert await _schema_snapshot(admin_db) == before


@pytest.fixture
async def scratch(admin_db: asyncpg.Pool, tmp_path: Path):
    """A throwaway schema and migrations folder for exercising the runner itself."""
    schema = f"scratch_{uuid.uuid4().hex[:8]}"
    await admin_db.execute(f"CREATE SCHEMA {schema}")
    (tmp_path / "001_first.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "002_second.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    yield schema, [MigrationSet("scratch", tmp_path)]
    await admin_db.execute(f"DROP SCHEMA {schema} CASCADE")


async def _connect_to(admin_db: asyncpg.Pool, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        with_database(ADMIN_DSN, TEST_DATABASE), server_settings={"search_path": schema}
    )


async def test_concurrent_runners_apply_each_migration_once(admin_db, scratch) -> None:
    schema, sets = scratch
    conns = [await _connect_to(admin_db, schema) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, schema, sets) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    applied = sorted(name for result in results for name in result)
    assert applied == ["scratch/001_first", "scratch/002_second"]
    versions = await admin_db.fetch(f"SELECT version FROM {schema}.schema_migrations")
    assert sorted(r["version"] for r in versions) == [1, 2]


async def test_an_edited_applied_migration_stops_the_start(admin_db, scratch) -> None:
    schema, sets = scratch
    conn = await _connect_to(admin_db, schema)
    try:
        await apply_migrations(conn, schema, sets)
        first = sets[0].directory / "001_first.sql"
        first.write_text("CREATE TABLE things (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, schema, sets)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(admin_db, scratch) -> None:
    schema, sets = scratch
    broken = sets[0].directory / "003_broken.sql"
    broken.write_text("CREATE TABLE half (id int); SELECT nonsense_fn();")
    conn = await _connect_to(admin_db, schema)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_migrations(conn, schema, sets)
    finally:
        await conn.close()
    tables = await admin_db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert {t["table_name"] for t in tables} == {"things", "schema_migrations"}
    assert await admin_db.fetchval(f"SELECT max(version) FROM {schema}.schema_migrations") == 2


async def test_the_sweep_deletes_expired_sessions_one_instance_at_a_time(
    system: System, client, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email)
    await login(client, email)
    expired_token = await login(client, email)
    await admin_db.execute(
        "UPDATE auth.sessions SET expires_at = now() - interval '1 minute' WHERE token_hash = $1",
        token_hash(expired_token),
    )
    auth_app = system.apps["auth"]

    async with admin_db.acquire() as holder, holder.transaction():
        # Another instance holding the sweep lock: this one skips its turn.
        await holder.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SWEEP_LOCK)
        assert await sweep_expired_sessions(auth_app) is None

    assert await sweep_expired_sessions(auth_app) >= 1
    remaining = await admin_db.fetch(
        """
        SELECT s.expires_at > now() AS live FROM auth.sessions s
        JOIN auth.users u ON u.id = s.user_id WHERE u.email = $1
        """,
        email,
    )
    assert [r["live"] for r in remaining] == [True]
    async with auth_app[POOL_KEY].acquire() as conn:
        assert await queries.delete_expired(conn, SWEEP_LOCK, 86400) == 0


async def test_pool_connections_go_out_in_the_order_they_were_asked_for() -> None:
    """A request that asks while others wait queues behind them; none is passed over."""
    settings = OrdersSettings(
        port=0, database_url=with_database(ADMIN_DSN, TEST_DATABASE),
        identity_secret="x" * 32, db_pool_min_size=1, db_pool_max_size=1,
    )
    pool = await db.create_pool(settings, "public")
    served: list[str] = []

    async def use(name: str) -> None:
        async with pool.acquire() as conn:
            served.append(name)
            await conn.execute("SELECT 1")

    let_go = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire():
            await let_go.wait()

    try:
        holding = asyncio.create_task(hold())
        for _ in range(10):  # it has the connection
            await asyncio.sleep(0)
        waiting = [asyncio.create_task(use(f"waiter {n}")) for n in range(3)]
        for _ in range(10):  # they all get to the queue
            await asyncio.sleep(0)
        let_go.set()
        await asyncio.sleep(0)  # the release is under way: the connection goes back next
        # A request that starts then runs before the woken waiter: it must still come last.
        newcomer = asyncio.create_task(use("newcomer"))
        await asyncio.gather(holding, newcomer, *waiting)
    finally:
        await pool.close()
    assert served == ["waiter 0", "waiter 1", "waiter 2", "newcomer"]


async def test_a_connection_that_dies_while_lent_gives_its_turn_back(
    admin_db: asyncpg.Pool,
) -> None:
    """Postgres ends a connection while a request holds it: once the request lets go, the
    pool serves the next one (it must not wait for a turn the dead connection never gave
    back)."""
    settings = OrdersSettings(
        port=0, database_url=with_database(ADMIN_DSN, TEST_DATABASE),
        identity_secret="x" * 32, db_pool_min_size=1, db_pool_max_size=1,
    )
    pool = await db.create_pool(settings, "public")
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await admin_db.execute("SELECT pg_terminate_backend($1)", pid)

            async def broken() -> bool:
                try:
                    await conn.fetchval("SELECT 1")
                except db.DATABASE_ERRORS:
                    return True
                return False  # the backend has not gone yet

            await eventually(broken, deadline_seconds=10)
        async with asyncio.timeout(10), pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
