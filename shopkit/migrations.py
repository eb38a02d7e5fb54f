"""Versioned `.sql` files per service, each applied once, under an advisory lock.

A service's schema gets migrations from tracks: the kit's own (the outbox table every service
has) and the service's. Within a track, files are named `NNN_description.sql` and applied in
number order, each in its own transaction together with its row in `<schema>.schema_migrations`.
An advisory lock, taken by each migration's transaction, makes instances that start at the same
time take turns: the second one finds everything applied and does nothing. A file that changed
after it was applied stops the start-up rather than leaving schema and code out of step.
"""

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("shopkit.migrations")

_FILE_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class MigrationSet:
    track: str
    directory: Path


KIT_MIGRATIONS = (
    MigrationSet("outbox", Path(__file__).parent / "sql" / "outbox"),
    MigrationSet("inbox", Path(__file__).parent / "sql" / "inbox"),
)


def service_migrations(track: str, directory: Path) -> list[MigrationSet]:
    """What a service's schema is built from: the kit's tracks first, then its own."""
    return [*KIT_MIGRATIONS, MigrationSet(track, directory)]


@dataclass(frozen=True)
class Migration:
    track: str
    version: int
    name: str
    sql: str

    @property
    def has_statements(self) -> bool:
        """False for a file of comments only (asyncpg cannot send an empty query)."""
        return any(
            line.strip() and not line.strip().startswith("--") for line in self.sql.splitlines()
        )

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(migration_set: MigrationSet) -> list[Migration]:
    migrations = []
    for path in sorted(migration_set.directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 001_name.sql: {path.name}")
        migrations.append(
            Migration(migration_set.track, int(match.group(1)), path.stem, path.read_text())
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {migration_set.directory}")
    return migrations


async def apply_migrations(
    conn: asyncpg.Connection, schema: str, sets: Sequence[MigrationSet]
) -> list[str]:
    """Applies what is pending; returns the names applied (empty when up to date).

    Each migration is a transaction of its own that takes the schema's advisory lock first and
    then looks whether it is applied: an instance starting beside another waits for the
    other's migration and then finds it done. Transaction-level locks hold through a pooler
    in transaction mode, where a session's statements may each run on another server
    connection."""
    migrations = [m for migration_set in sets for m in load_migrations(migration_set)]
    async with conn.transaction():
        await _lock(conn, schema)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                track text NOT NULL,
                version integer NOT NULL,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (track, version)
            )
            """
        )
    done = []
    for migration in migrations:
        async with conn.transaction():
            await _lock(conn, schema)
            applied = await conn.fetchval(
                "SELECT checksum FROM schema_migrations WHERE track = $1 AND version = $2",
                migration.track, migration.version,
            )
            if applied is not None:
                if applied != migration.checksum:
                    raise MigrationError(f"{migration.name} changed after it was applied")
                continue
            if migration.has_statements:
                await conn.execute(migration.sql)
            await conn.execute(
                """
                INSERT INTO schema_migrations (track, version, name, checksum)
                VALUES ($1, $2, $3, $4)
                """,
                migration.track,
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied migration", extra={"schema": schema, "migration": migration.name})
        done.append(f"{migration.track}/{migration.name}")
    return done


async def _lock(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrations:{schema}")
