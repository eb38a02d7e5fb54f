"""A shop's backup as one file, and its database part: dumped in one snapshot, loaded back in
one transaction.

The file is a tar of four members:
- `database.dump`: every service's schema, dumped by one `pg_dump` (custom format), so from
  one snapshot: orders, stock, outboxes, inboxes, timelines and notifications agree;
- `broker.json`: the shop's RabbitMQ definitions (shopkit.broker_access.shop_definitions);
- `manifest.json`: what the backup is (format version, when, the database, its schemas and
  the roles that own them, the vhost) and each member's size and SHA-256;
- `manifest.hmac-sha256`: the manifest's signature under the shop's backup key
  (`signature`), written last, so a file cut short anywhere lacks it, and a file rebuilt by
  anyone without the key fails it.
A restore unpacks and checks all of it before it changes anything (`unpack`).

No secret is written in clear: no role's password (the restore makes the roles from the
shop's settings, as the bootstrap does), no token (sessions keep SHA-256 of their tokens), no
key. The file still holds personal data and password hashes, so it is written readable by its
owner alone, and is to be encrypted before it leaves the machine (README, "Backups").
"""

import asyncio
import hashlib
import hmac
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel, ValidationError

from shopkit.bootstrap import ServiceDatabase, shop_database, with_database
from shopkit.outbox import RETENTION

DUMP = "database.dump"
BROKER = "broker.json"
MANIFEST = "manifest.json"
MANIFEST_SIGNATURE = "manifest.hmac-sha256"
CONTENTS = (DUMP, BROKER)
CHUNK = 1 << 20
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE
# pg_dump waits this long at most for a table's lock (a migration running), then fails
# rather than hold everyone's writes behind its own wait.
LOCK_WAIT = "60s"


class Refused(Exception):
    """Why a restore did not go on; nothing was changed. The exit code tells the cases apart."""

    exit_code = 2


class BadBackup(Refused):
    """The file is not a whole, unaltered backup this version can restore."""


class ShopInUse(Refused):
    """The target shop holds data, and the restore was not told to replace it."""

    exit_code = 3


# The manifest -----------------------------------------------------------------------------


class Member(BaseModel):
    size: int
    sha256: str


class DatabasePart(BaseModel):
    name: str
    schemas: dict[str, str]  # schema -> the role that owns it
    server_version: str
    # The database's clock just before the dump's snapshot: events published from
    # RETENTION before it on may still have waited in a queue (services.backup).
    clock: datetime


class Manifest(BaseModel):
    format: Literal["shop-backup"] = "shop-backup"
    version: Literal[1] = 1
    created_at: datetime
    database: DatabasePart
    vhost: str
    members: dict[str, Member]


# Writing ----------------------------------------------------------------------------------


def digest_of(path: Path) -> Member:
    sha = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            sha.update(chunk)
    return Member(size=path.stat().st_size, sha256=sha.hexdigest())


def signature(key: bytes, manifest: bytes) -> bytes:
    """The manifest's HMAC-SHA256 under the shop's backup key (BACKUP_SIGNING_KEY): a file
    anyone could have rebuilt with matching SHA-256s is not the shop's backup. A restore runs
    the dump's SQL as the database's administrator, so only a file this shop signed is
    restored."""
    return hmac.new(key, manifest, hashlib.sha256).hexdigest().encode()


def write_archive(
    directory: Path, stem: str, manifest: Manifest, members: dict[str, Path], key: bytes
) -> Path:
    """The backup as `directory/<stem>.tar` (or `<stem>-2.tar`... when taken), readable by its
    owner alone. It is written under a hidden name and linked into place once whole, so a
    file of that name is never half written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A name of its own (mkstemp: created, never reused, mode 0600): two backups started in
    # the same second never write into one file.
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, path in members.items():
                    tar.add(path, arcname=name, filter=_owner_only)
                text = manifest.model_dump_json(indent=2).encode()
                _add_bytes(tar, MANIFEST, text)
                _add_bytes(tar, MANIFEST_SIGNATURE, signature(key, text))
            raw.flush()
            os.fsync(raw.fileno())
        return _link_unused(partial, directory, stem)
    finally:
        partial.unlink(missing_ok=True)


def _owner_only(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _link_unused(source: Path, directory: Path, stem: str) -> Path:
    for n in range(1, 1000):
        target = directory / (f"{stem}.tar" if n == 1 else f"{stem}-{n}.tar")
        try:
            os.link(source, target)  # fails, rather than replaces, when the name is taken
        except FileExistsError:
            continue
        return target
    raise RuntimeError(f"no free name for a backup in {directory}")


# Reading ----------------------------------------------------------------------------------


def unpack(path: Path, into: Path, key: bytes) -> Manifest:
    """The backup's members, unpacked into `into` and checked against its manifest: every
    member there, none else, each of its size and SHA-256. BadBackup otherwise."""
    if not path.is_file():
        raise BadBackup(f"{path} is not a file")
    try:
        found = _unpack_members(path, into)
    except (tarfile.TarError, EOFError) as exc:
        raise BadBackup(f"{path} cannot be read as a backup, it is cut short or is not one"
                        f" ({exc})") from exc
    for name in (MANIFEST, MANIFEST_SIGNATURE):
        if name not in found:
            raise BadBackup(f"{path} lacks its {name}: the file is cut short, or is not a backup")
    text = (into / MANIFEST).read_bytes()
    if not hmac.compare_digest((into / MANIFEST_SIGNATURE).read_bytes().strip(),
                               signature(key, text)):
        raise BadBackup(f"{path} is corrupt, was changed, or was signed with another key: its"
                        " manifest does not match its signature (BACKUP_SIGNING_KEY)")
    manifest = _parse(path, text)
    if set(manifest.members) != set(CONTENTS) or set(found) != {*CONTENTS, MANIFEST,
                                                                   MANIFEST_SIGNATURE}:
        raise BadBackup(f"{path} holds {sorted(found)}; a backup holds"
                        f" {sorted([*CONTENTS, MANIFEST, MANIFEST_SIGNATURE])}")
    for name, expected in manifest.members.items():
        if found[name] != expected:
            raise BadBackup(f"{path} is corrupt: {name} is not what its manifest says"
                            f" ({found[name].size} bytes, SHA-256 {found[name].sha256[:12]}...;"
                            f" the manifest: {expected.size} bytes, {expected.sha256[:12]}...)")
    return manifest


def _unpack_members(path: Path, into: Path) -> dict[str, Member]:
    """Each member (regular files of known names only) written into `into` as it is hashed."""
    found: dict[str, Member] = {}
    end = 0
    with tarfile.open(path, mode="r:") as tar:  # a plain tar: nothing decompressed on a guess
        for info in tar:
            if info.name not in (*CONTENTS, MANIFEST, MANIFEST_SIGNATURE) or not _plain(info):
                raise BadBackup(f"{path} holds {info.name!r}, which no backup holds")
            # A member's data lies in the file: none can unpack to more than the file holds.
            if info.offset_data + info.size > path.stat().st_size:
                raise BadBackup(f"{path} is cut short: {info.name} is not whole")
            source = tar.extractfile(info)
            assert source is not None  # a regular file
            with source, (into / info.name).open("wb") as target:
                found[info.name] = _copy_hashing(source, target)
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    if found and not _ends_there(path, end):
        raise BadBackup(f"{path} is cut short: it lacks the end of the archive")
    return found


def _plain(info: tarfile.TarInfo) -> bool:
    """A regular file as `write_archive` writes one: no link, device or sparse member (whose
    holes would unpack to far more than the archive holds)."""
    return info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.sparse is None


def _ends_there(path: Path, end: int) -> bool:
    """Whether the archive's end (two zero blocks) follows its last member, and the file is
    whole records, as `write_archive` writes it: a file cut in its padding alone still has
    every member whole, but is not the file that was written."""
    if path.stat().st_size % tarfile.RECORDSIZE:
        return False
    with path.open("rb") as file:
        file.seek(end)
        return file.read(END_OF_ARCHIVE) == bytes(END_OF_ARCHIVE)


def _copy_hashing(source: IO[bytes], target: IO[bytes]) -> Member:
    sha, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return Member(size=size, sha256=sha.hexdigest())


def _parse(path: Path, text: bytes) -> Manifest:
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise BadBackup(f"{path} has a manifest this version does not read"
                        f" ({exc.error_count()} problems, first: {exc.errors()[0]['msg']})"
                        ) from exc


# The database -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """How Postgres' own tools reach a database: a URI without the password, which goes in
    PGPASSWORD instead, since any user of the machine can read a command line."""

    uri: str
    env: dict[str, str]


def connection_for_tools(dsn: str, database: str) -> Connection:
    parts = urlsplit(with_database(dsn, database))
    credentials, at, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    env = {**os.environ, "PGAPPNAME": "shop-backup", "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = unquote(password)
    return Connection(urlunsplit(parts._replace(netloc=f"{user}{at}{hosts}")), env)


def postgres_tool(name: str, server_version_num: int) -> str:
    """The tool of the server's major version (Debian keeps each version's in
    /usr/lib/postgresql/<major>/bin), else the one on PATH: pg_dump refuses a server newer
    than itself, and pg_restore a dump newer than itself, each saying so."""
    versioned = Path(f"/usr/lib/postgresql/{server_version_num // 10000}/bin/{name}")
    if versioned.is_file():
        return str(versioned)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is needed: install Postgres' client tools"
                           f" (postgresql-client-{server_version_num // 10000} on Debian)")
    return found


async def server_version_num(admin_dsn: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()


async def dump_database(
    admin_dsn: str, services: Sequence[ServiceDatabase], into: Path
) -> DatabasePart:
    """Every service's schema, by one pg_dump: one transaction, so one snapshot."""
    database = shop_database(services)
    conn = await asyncpg.connect(with_database(admin_dsn, database))
    try:
        owners = dict(await conn.fetch(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
            " WHERE nspname = any($1::text[])", [s.schema for s in services]))
        version_num = int(await conn.fetchval("SHOW server_version_num"))
        version = await conn.fetchval("SHOW server_version")
        clock = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    missing = [s.schema for s in services if s.schema not in owners]
    if missing:
        raise RuntimeError(f"database {database} has no schema {', '.join(missing)}:"
                           " nothing of that shop to back up (make db makes it)")
    target = connection_for_tools(admin_dsn, database)
    # Each schema's name as an exact pattern (quoted), never a wildcard.
    schemas = [arg for s in services for arg in ("--schema", f'"{s.schema}"')]
    await _run([postgres_tool("pg_dump", version_num), "--format=custom", "--no-password",
                f"--lock-wait-timeout={LOCK_WAIT}", *schemas, f"--file={into}",
                f"--dbname={target.uri}"], target.env)
    return DatabasePart(name=database, schemas={s.schema: owners[s.schema] for s in services},
                        server_version=version, clock=clock)


async def check_dump_readable(admin_dsn: str, dump: Path) -> None:
    """pg_restore reads the dump's table of contents: a dump of a newer Postgres than this
    one's tools is refused here, before anything changes."""
    tool = postgres_tool("pg_restore", await server_version_num(admin_dsn))
    try:
        await _run([tool, "--list", str(dump)], os.environ.copy())
    except RuntimeError as exc:
        raise BadBackup(f"the backup's database dump cannot be read: {exc}") from exc


async def tables_with_rows(admin_dsn: str, database: str, schemas: Sequence[str]) -> list[str]:
    """The tables of these schemas holding a row ([] when there is no such database). A
    shop's schema_migrations aside: a shop the bootstrap made and nobody used is empty."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return []
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(admin_dsn, database))
    try:
        tables = await conn.fetch(
            "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables"
            " WHERE schemaname = any($1::text[]) AND tablename <> 'schema_migrations'"
            " ORDER BY 1", list(schemas))
        # The names come from the catalog, quoted by the server.
        return [t["name"] for t in tables
                if await conn.fetchval(f"SELECT EXISTS (SELECT FROM {t['name']})")]
    finally:
        await conn.close()


# Run by psql in the load's one transaction, before the dump's own statements: :'schemas' (a
# text[] literal) is a psql variable, quoted by psql, and the statements are made by the
# server's format(%I).
_DROP_SCHEMAS = """
SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', name) FROM unnest(:'schemas'::text[]) AS name
\\gexec
"""


async def load_database(
    admin_dsn: str, services: Sequence[ServiceDatabase], dump: Path, workdir: Path
) -> None:
    """The services' schemas replaced by the dump's, in one transaction: all of it, or (on any
    error) nothing. The services' roles must exist: the dump makes each schema owned by its
    role.

    pg_restore writes the dump out as SQL first, whole, and psql runs it: a dump piped
    straight in, were it cut off, would leave psql committing the part it got."""
    version_num = await server_version_num(admin_dsn)
    script, before = workdir / "dump.sql", workdir / "before.sql"
    await _run([postgres_tool("pg_restore", version_num), f"--file={script}", str(dump)],
               os.environ.copy())
    before.write_text(_DROP_SCHEMAS)
    target = connection_for_tools(admin_dsn, shop_database(services))
    schemas = "{" + ",".join(s.schema for s in services) + "}"
    try:
        await _run([postgres_tool("psql", version_num), "--no-psqlrc", "--quiet",
                    "--no-password", "--set=ON_ERROR_STOP=1", "--single-transaction",
                    f"--set=schemas={schemas}", f"--file={before}", f"--file={script}",
                    f"--dbname={target.uri}"], target.env)
    except RuntimeError as exc:
        raise RuntimeError(f"loading the dump failed and was rolled back: {exc}") from exc


async def mark_unsent(
    admin_dsn: str, services: Sequence[ServiceDatabase], since: datetime | None
) -> int:
    """Marks unsent, in every service's outbox, the events published since `since` (when
    None: within RETENTION before the newest event any outbox holds, the last moment the
    database knows of), so that the relays send them again; all in one transaction. Returns
    how many events the outboxes now hold unsent."""
    conn = await asyncpg.connect(with_database(admin_dsn, shop_database(services)))
    try:
        async with conn.transaction():
            outboxes = [await _outbox(conn, s.schema) for s in services]
            if since is None:
                since = await _retained_since(conn, outboxes)
            for outbox in outboxes:
                await conn.execute(
                    f"UPDATE {outbox} SET published_at = NULL WHERE published_at >= $1", since)
            return sum([await conn.fetchval(
                f"SELECT count(*) FROM {outbox} WHERE published_at IS NULL")
                for outbox in outboxes])
    finally:
        await conn.close()


async def _retained_since(conn: asyncpg.Connection, outboxes: list[str]) -> datetime | None:
    """RETENTION before the newest event of these outboxes (None when they are empty)."""
    newest = [await conn.fetchval(f"SELECT max(coalesce(published_at, created_at)) FROM {o}")
              for o in outboxes]
    latest = max((n for n in newest if n is not None), default=None)
    return latest - RETENTION if latest is not None else None


async def _outbox(conn: asyncpg.Connection, schema: str) -> str:
    """A schema's outbox table, as a name quoted by the server."""
    return await conn.fetchval("SELECT format('%I.outbox', $1::text)", schema)


async def _run(command: list[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
    _, errors = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"{Path(command[0]).name} failed: "
                           f"{errors.decode(errors='replace').strip()}")
