"""Database set-up, run with an admin DSN: the database, one login role and one schema per service.

Idempotent: run it as often as you like. Each schema is owned by its service's role, PUBLIC gets
nothing, so a role can use its own schema and no other. Identifiers and passwords reach SQL only
through the server's own quoting (`format('%I')`, `format('%L')`) with the values as parameters.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from shopkit.db import SESSION
from shopkit.migrations import MigrationSet, apply_migrations

log = logging.getLogger("shopkit.bootstrap")


@dataclass(frozen=True)
class ServiceDatabase:
    schema: str
    dsn: str
    migrations: list[MigrationSet]

    @property
    def role(self) -> str:
        return unquote(urlsplit(self.dsn).username or "")

    @property
    def password(self) -> str | None:
        password = urlsplit(self.dsn).password
        return unquote(password) if password is not None else None

    @property
    def database(self) -> str:
        return database_of(self.dsn)


def database_of(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _execute_formatted(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Runs a statement whose identifiers or literals cannot be parameters, quoted by Postgres."""
    placeholders = ", ".join(f"${i}::text" for i in range(1, len(values) + 1))
    statement = await conn.fetchval(f"SELECT format('{template}', {placeholders})", *values)
    await conn.execute(statement)


async def ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            try:
                await _execute_formatted(conn, "CREATE DATABASE %I", database)
                log.info("database created", extra={"database": database})
            except asyncpg.DuplicateDatabaseError:
                pass  # another bootstrap created it meanwhile
    finally:
        await conn.close()


async def ensure_service(conn: asyncpg.Connection, service: ServiceDatabase) -> None:
    await ensure_role(conn, service)
    await ensure_schema(conn, service)


async def ensure_role(conn: asyncpg.Connection, service: ServiceDatabase) -> None:
    """The service's login role, with the password its URL gives and no more rights than
    connecting to the database. (A restore makes the roles alone first: the dump it loads
    makes the schemas, owned by these roles.)"""
    role, database = service.role, service.database
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if not exists:
        await _execute_formatted(conn, "CREATE ROLE %I LOGIN", role)
    await _execute_formatted(
        conn, "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS", role
    )
    if service.password is not None:
        await _execute_formatted(conn, "ALTER ROLE %I PASSWORD %L", role, service.password)
    await _execute_formatted(conn, "GRANT CONNECT ON DATABASE %I TO %I", database, role)


async def ensure_schema(conn: asyncpg.Connection, service: ServiceDatabase) -> None:
    """The service's schema, owned by its role and closed to every other, and the session
    its role runs with in the database."""
    role, schema, database = service.role, service.schema, service.database
    await _execute_formatted(conn, "CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I", schema, role)
    await _execute_formatted(conn, "ALTER SCHEMA %I OWNER TO %I", schema, role)
    await _execute_formatted(conn, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", schema)
    await _execute_formatted(
        conn, "ALTER ROLE %I IN DATABASE %I SET search_path = %I", role, database, schema
    )
    # The session a service's connections run with, kept by the role: through a pooler, which
    # passes on no startup parameter but the login, these are what apply (shopkit.db.SESSION).
    for name, value in SESSION.items():
        await _execute_formatted(
            conn, "ALTER ROLE %I IN DATABASE %I SET %I = %L", role, database, name, value
        )


def shop_database(services: Sequence[ServiceDatabase]) -> str:
    """The one database every service's schema is in."""
    databases = {s.database for s in services}
    if len(databases) != 1:
        raise ValueError(f"every service must use the same database, got {sorted(databases)}")
    return databases.pop()


async def bootstrap(admin_dsn: str, services: list[ServiceDatabase]) -> None:
    await prepare(admin_dsn, services, ensure_service)
    for service in services:
        await migrate(service)


async def ensure_roles(admin_dsn: str, services: list[ServiceDatabase]) -> None:
    """The database and each service's role, without their schemas: what a restore needs
    before it loads a dump, which makes the schemas owned by these roles."""
    await prepare(admin_dsn, services, ensure_role)


async def prepare(
    admin_dsn: str,
    services: list[ServiceDatabase],
    ensure: Callable[[asyncpg.Connection, ServiceDatabase], Awaitable[None]],
) -> None:
    """The database, closed to PUBLIC, then `ensure` for each service, under the bootstrap's
    lock."""
    database = shop_database(services)
    await ensure_database(admin_dsn, database)
    conn = await asyncpg.connect(with_database(admin_dsn, database))
    try:
        async with conn.transaction():
            # Two bootstraps at once take turns instead of racing on CREATE ROLE.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('shop:bootstrap'))")
            await _execute_formatted(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for service in services:
                await ensure(conn, service)
    finally:
        await conn.close()


async def migrate(service: ServiceDatabase) -> list[str]:
    """Applies a service's migrations as the service's own role, as the service does at start."""
    # No statement kept prepared: the service's URL may be a PgBouncer in transaction mode.
    conn = await asyncpg.connect(
        service.dsn, server_settings={"search_path": service.schema}, statement_cache_size=0
    )
    try:
        return await apply_migrations(conn, service.schema, service.migrations)
    finally:
        await conn.close()
