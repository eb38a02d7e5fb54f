"""The asyncpg pool of a service, connected as the service's own role to its own schema."""

import asyncio
import logging
import time
from typing import Any

import asyncpg
import orjson

from shopkit.backoff import Backoff
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
)


def _connect_options(settings: ServiceSettings, schema: str) -> dict:
    return {
        "dsn": settings.database_url.get_secret_value(),
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_command_timeout_seconds,
        "server_settings": {
            "search_path": schema,
            "application_name": schema,
            # UTC for times Postgres writes as text itself (row_to_json), as asyncpg gives them.
            "TimeZone": "UTC",
            # asyncpg prepares every statement once per connection. Left to choose, Postgres
            # plans the busiest ones (arrays, many CTEs) again at every execution, and that
            # planning was 15 % of order placement's throughput. So each statement is planned
            # once, for all parameters: statements are written for that (no condition that
            # only a NULL parameter switches off; see shopkit.pagination.NEWEST).
            "plan_cache_mode": "force_generic_plan",
            # Reading a page at random costs little more than reading the next one when the
            # data is on SSD or in memory (Postgres' documentation suggests 1.1 for that; its
            # default, 4, models spinning disks). With 4, a plan made for any array of ids
            # scanned all products (a thousand rows, three times per order) instead of
            # looking the few up by primary key.
            "random_page_cost": "1.1",
        },
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


async def connect(settings: ServiceSettings, schema: str) -> asyncpg.Connection:
    """One connection outside the pool (a listener's, a command's), speaking as pool
    connections do."""
    conn = await asyncpg.connect(**_connect_options(settings, schema))
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
    (a round trip each time) has nothing to undo and is left out; an open transaction is still
    rolled back on release.

    It remembers whether its user wrote an outbox event (`shopkit.outbox.event_written`), for
    the pool to wake the relay when it comes back."""

    _wrote_event = False

    def get_reset_query(self) -> str:
        return ""

    def note_event_written(self) -> None:
        self._wrote_event = True

    def take_event_note(self) -> bool:
        wrote, self._wrote_event = self._wrote_event, False
        return wrote


class FairPool(asyncpg.Pool):
    """asyncpg's pool hands a released connection to whichever acquire comes first: a waiter
    woken for it can find it taken by a newcomer and queue again at the back. Under uvloop,
    at 50 concurrent requests on 10 connections, that left a few requests waiting for most of
    a second (p99 776 ms, p50 4 ms). asyncio's Semaphore lets no newcomer pass a waiter, so one
    in front of the pool hands connections out in arrival order."""

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, max_size=max_size, **kwargs)
        self._turns = asyncio.Semaphore(max_size)
        self._lent: set[object] = set()
        # Set when a connection that wrote an outbox event comes back: its transaction is
        # over by then (committed, or rolled back by the release), and this process's relay,
        # waiting on it, publishes the event at once.
        self.event_released = asyncio.Event()

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        await self._turns.acquire()
        try:
            connection = await super()._acquire(timeout)
        except BaseException:
            self._turns.release()
            raise
        self._lent.add(connection)
        return connection

    async def release(
        self, connection: Any, *, timeout: float | None = None  # noqa: ASYNC109 (asyncpg's)
    ) -> None:
        try:
            wrote_event = connection in self._lent and connection.take_event_note()
        except AttributeError:
            # It closed while lent (Postgres went away): asyncpg has already taken it back
            # and detached it; whatever it wrote did not commit after that, and the relays'
            # poll finds what did. Its turn must still be given back, below.
            wrote_event = False
        try:
            await super().release(connection, timeout=timeout)
        finally:
            if connection in self._lent:  # a second release of one connection is a no-op
                self._lent.discard(connection)
                self._turns.release()
            if wrote_event:
                self.event_released.set()


async def create_pool(settings: ServiceSettings, schema: str) -> FairPool:
    """Like asyncpg.create_pool, with the FairPool."""
    return await FairPool(
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_json_codecs,
        connection_class=StatelessConnection,
        record_class=asyncpg.Record,
        loop=None,
        **_connect_options(settings, schema),
    )
