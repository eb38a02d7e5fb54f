"""The asyncpg pool of a service, connected as the service's own role to its own schema."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson

from shopkit import tuning
from shopkit.backoff import Backoff
from shopkit.metrics import POOL_WAIT
from shopkit.settings import ServiceSettings

log = logging.getLogger("shopkit.db")

# What a query raises when Postgres is down, restarting or unreachable: the request gets 503,
# and the pool replaces broken connections on later acquires, so service resumes on its own.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # A statement sent just as the server ended the connection finds it in no state to send.
    asyncpg.exceptions.InternalClientError,
    # A server that takes no writes (a standby: through a pooler, or before a failover ends).
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


# The session every service connection runs with, besides its schema as search_path. Sent at
# connect, and stored on each service's role by the bootstrap (shopkit.bootstrap): a pooler
# such as PgBouncer passes no such startup parameter on, and the role's own settings then apply.
SESSION = {
    # UTC for times Postgres writes as text itself (row_to_json), as asyncpg gives them.
    "TimeZone": "UTC",
    **tuning.POSTGRES_SESSION,
}


def _connect_options(
    settings: ServiceSettings, schema: str, dsn: str | None = None
) -> dict[str, Any]:
    return {
        "dsn": dsn or settings.database_url.get_secret_value(),
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_command_timeout_seconds,
        "statement_cache_size": settings.db_statement_cache_size,
        "server_settings": {"search_path": schema, "application_name": schema, **SESSION},
    }


# SQLSTATE classes of a database that cannot serve right now: connection exceptions (08),
# insufficient resources (53: too many connections, disk full), operator intervention (57),
# system errors (58), and transaction rollbacks (40: deadlock, serialization) worth a retry.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    """Errors that mean "the database cannot serve right now", answered with 503."""
    if isinstance(exc, DATABASE_ERRORS):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and str(sqlstate)[:2] in _TRANSIENT_CLASSES


async def connect(
    settings: ServiceSettings, schema: str, dsn: str | None = None
) -> asyncpg.Connection:
    """One connection outside the pool (a listener's, a command's), speaking as pool
    connections do; to `dsn` if given (a listener's own, past a pooler)."""
    conn = await asyncpg.connect(**_connect_options(settings, schema, dsn))
    await _json_codecs(conn)
    return conn


async def connect_when_ready(settings: ServiceSettings, schema: str) -> asyncpg.Connection:
    """One connection, retried while Postgres is starting, up to the startup timeout."""
    deadline = time.monotonic() + settings.startup_timeout_seconds
    backoff = Backoff(most=2.0)
    while True:
        try:
            return await connect(settings, schema)
        except DATABASE_ERRORS as exc:  # CannotConnectNow (starting up) is among them
            if time.monotonic() + backoff.next_pause > deadline:
                raise
            log.warning("waiting for postgres: %s", type(exc).__name__)
            await backoff.pause()


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """jsonb columns read and take Python values (dicts, lists) instead of JSON text."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
    )


class StatelessConnection(asyncpg.Connection):
    """A pool connection that holds no session state between uses: only transaction-scoped
    locks, no LISTEN, no SET, no cursors. So the reset query asyncpg sends on every release
    (a round trip each time) has nothing to undo and is left out (asyncpg's documented
    `get_reset_query`); an open transaction is still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""


Released = Callable[[asyncpg.Connection], None]


class Pool:
    """A service's connections, as asyncpg's pool holds them, handed out in the order they
    were asked for.

    asyncpg's pool gives a released connection to whichever acquire comes first: a waiter woken
    for it can find it taken by a newcomer and queue again at the back, so under load a few
    requests wait far longer than the rest. asyncio's Semaphore lets no newcomer pass a
    waiter: one in front of the pool, as many turns as connections, hands them out in arrival
    order. Whoever must know when a connection comes back, its transaction over, says so with
    `on_release` (the outbox relay wakes then). How long each acquire waited for its
    connection is observed in `shop_db_pool_wait_seconds`, under `component`."""

    def __init__(self, pool: asyncpg.Pool, size: int, component: str) -> None:
        self._pool = pool
        self._turns = asyncio.Semaphore(size)
        self._released: list[Released] = []
        self._waits = POOL_WAIT.labels(component)

    def on_release(self, hook: Released) -> None:
        self._released.append(hook)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        asked = time.perf_counter()
        async with self._turns, self._pool.acquire() as conn:
            self._waits.observe(time.perf_counter() - asked)
            try:
                yield conn
            finally:
                for hook in self._released:
                    hook(conn)

    @property
    def size(self) -> int:
        return self._pool.get_size()

    @property
    def idle(self) -> int:
        return self._pool.get_idle_size()

    async def close(self) -> None:
        await self._pool.close()


async def create_pool(settings: ServiceSettings, schema: str) -> Pool:
    pool = await asyncpg.create_pool(
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        max_queries=tuning.POOL_MAX_QUERIES,
        max_inactive_connection_lifetime=tuning.POOL_IDLE_SECONDS,
        init=_json_codecs,
        connection_class=StatelessConnection,
        **_connect_options(settings, schema),
    )
    return Pool(pool, settings.db_pool_max_size, schema)  # a service's schema is its name
