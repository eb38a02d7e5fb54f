"""`python -m services.backup create` (make backup): one consistent backup of the shop, as
`<database>-<UTC time>.tar` in BACKUP_DIR (default `backups/`): every service's schema from
one snapshot, and the shop's RabbitMQ definitions (shopkit.backup says what the file holds).

`python -m services.backup restore FILE [--force]` (make restore FILE=... [FORCE=1]): the shop
back from such a file. The file is checked whole first, and a shop holding data (a row in a
service's table, a message in one of its queues) is replaced only with --force. Then: the
database and each service's role, made as the bootstrap makes them (from the settings, never
from the file); the schemas loaded from the dump in one transaction; then `after_recovery`.

`python -m services.backup after-recovery`: `after_recovery` alone, for a database brought
back to an earlier moment by other means (a point-in-time recovery on Kubernetes,
docs/operations.md): the bootstrap, recent events to be sent again, the shop's queues emptied.

Events, once the components start again (README, "Backups"): the relays send what the
outboxes held unsent at that moment, and again every event published within RETENTION
before it, since any of those may have still waited in a queue (no backup holds a queue's
messages). Each consumer's inbox, tracking's order versions and notifications' event ids are
of the same moment, so each consumer skips what it had applied and applies the rest once.

Reads the bootstrap's settings (services.bootstrap.BootstrapSettings): the database, roles,
vhost and users `make db` makes.
"""

import argparse
import asyncio
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from services.bootstrap import SUBSCRIPTIONS, BootstrapSettings, set_up_broker
from shopkit.backup import (
    BROKER,
    DUMP,
    BadBackup,
    Manifest,
    Refused,
    ShopInUse,
    check_dump_readable,
    digest_of,
    dump_database,
    load_database,
    mark_unsent,
    tables_with_rows,
    unpack,
    write_archive,
)
from shopkit.bootstrap import bootstrap, ensure_roles, shop_database
from shopkit.broker_access import (
    ShopBroker,
    delete_queues,
    ensure_vhost,
    export_definitions,
    import_definitions,
    messages_waiting,
    moved_to,
    shop_definitions,
    vhost_of,
)
from shopkit.logs import configure_logging
from shopkit.outbox import RETENTION
from shopkit.topology import declared

ENCRYPT_HINT = ("it holds personal data and password hashes: encrypt it before it leaves this"
                " machine, e.g. gpg --symmetric --cipher-algo AES256 {path}")


class BackupSettings(BootstrapSettings):
    # Where `create` writes; the default is relative to where it runs (make: the repository).
    backup_dir: Path = Path("backups")
    # Signs each backup's manifest (shopkit.backup.signature); a restore needs the same key.
    backup_signing_key: SecretStr

    @property
    def signing_key(self) -> bytes:
        return self.backup_signing_key.get_secret_value().encode()

    @property
    def admin_dsn(self) -> str:
        return self.admin_database_url.get_secret_value()

    @property
    def vhost(self) -> str:
        return vhost_of(self.rabbitmq_url.get_secret_value())

    @property
    def shop_broker(self) -> ShopBroker:
        queues, exchanges = declared(SUBSCRIPTIONS)
        return ShopBroker(self.vhost, frozenset(user.name for user in self.broker_users()),
                          frozenset(queues), frozenset(exchanges))


# make backup ------------------------------------------------------------------------------


async def create(settings: BackupSettings) -> Path:
    services = settings.services()
    created_at = datetime.now(UTC)
    settings.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Worked on beside the backup (same disk, and readable by its owner alone).
    with tempfile.TemporaryDirectory(dir=settings.backup_dir, prefix=".work-") as work:
        members = {DUMP: Path(work) / DUMP, BROKER: Path(work) / BROKER}
        database = await dump_database(settings.admin_dsn, services, members[DUMP])
        definitions = await export_definitions(settings.management_url, settings.shop_broker)
        members[BROKER].write_text(json.dumps(definitions, indent=1))
        manifest = Manifest(
            created_at=created_at, database=database, vhost=settings.vhost,
            members={name: digest_of(path) for name, path in members.items()})
        return write_archive(settings.backup_dir,
                             f"{database.name}-{created_at:%Y%m%dT%H%M%SZ}", manifest, members,
                             settings.signing_key)


# make restore -----------------------------------------------------------------------------


async def restore(settings: BackupSettings, path: Path, force: bool) -> str:
    """Restores the backup at `path`; what was restored, in words. Refused (nothing changed)
    when the file is not a whole backup that fits this shop, or the shop holds data and
    `force` is not given."""
    services = settings.services()
    with tempfile.TemporaryDirectory(prefix="shop-restore-") as work:
        workdir = Path(work)
        manifest = unpack(path, workdir, settings.signing_key)
        _check_fits(manifest, settings)
        await check_dump_readable(settings.admin_dsn, workdir / DUMP)
        definitions = _shop_part(path, workdir / BROKER, settings)
        await _check_empty(settings, _shop_queues(), force)
        # From here on, the shop changes.
        await ensure_roles(settings.admin_dsn, services)
        await load_database(settings.admin_dsn, services, workdir / DUMP, workdir)
        unsent = await after_recovery(settings, manifest.database.clock - RETENTION, definitions)
    return (f"restored {path}, taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC: database"
            f" {shop_database(services)} ({', '.join(manifest.database.schemas)}), RabbitMQ"
            f" vhost {settings.vhost} ({len(definitions['queues'])} queues,"
            f" {len(definitions['users'])} users). {_resend_note(unsent)}")


async def after_recovery(
    settings: BackupSettings, since: datetime | None, definitions: dict[str, Any] | None = None
) -> int:
    """The shop around a database just brought back to an earlier moment (by make restore,
    or a point-in-time recovery): the bootstrap's database part (each role's password from
    the settings, migrations newer than the backup), the events published since `since`
    marked unsent (shopkit.backup.mark_unsent), the shop's queues emptied of what they held
    (events of changes the database no longer has, or to be sent again), then, with
    `definitions`, the broker's part of a backup, and the bootstrap's broker part. Returns
    how many events the relays will send. Only the shop's queues go: the vhost may be `/`,
    shared with others."""
    services = settings.services()
    await bootstrap(settings.admin_dsn, services)
    unsent = await mark_unsent(settings.admin_dsn, services, since)
    queues = _shop_queues()
    if await messages_waiting(settings.management_url, settings.vhost) is not None:  # a vhost
        await delete_queues(settings.management_url, settings.vhost, sorted(queues))
    await ensure_vhost(settings.management_url, settings.vhost)
    if definitions is not None:
        await import_definitions(settings.management_url, settings.vhost, definitions)
    await set_up_broker(settings)
    return unsent


def _resend_note(unsent: int) -> str:
    minutes = int(RETENTION.total_seconds() // 60)
    return (f"Once the components start, their relays send {unsent} events (those unsent at"
            f" that moment, and those sent in the {minutes} minutes before it); each consumer"
            " skips those it had applied.")


def _check_fits(manifest: Manifest, settings: BackupSettings) -> None:
    """The backup's schemas are this shop's, owned by the roles this shop's settings name:
    the dump gives each schema to its role by name."""
    roles = {service.schema: service.role for service in settings.services()}
    if manifest.database.schemas != roles:
        raise BadBackup(
            f"the backup's schemas and their roles ({_pairs(manifest.database.schemas)}) are"
            f" not this shop's ({_pairs(roles)}): restore with the settings (.env) of the shop"
            " it was taken from")


def _pairs(schemas: dict[str, str]) -> str:
    return ", ".join(f"{schema} of {role}" for schema, role in sorted(schemas.items()))


def _shop_queues() -> set[str]:
    """The queues a restore may empty or make: those this version's bootstrap declares. The
    vhost may be `/`, shared with others, whose queues are never touched."""
    return declared(SUBSCRIPTIONS)[0]


def _shop_part(path: Path, broker_file: Path, settings: BackupSettings) -> dict[str, Any]:
    """The backup's RabbitMQ definitions, of this shop only (as `make backup` takes them):
    whatever else a file names (another user, an administrator, another app's queue or
    policy) is never imported, whoever wrote the file."""
    try:
        definitions = json.loads(broker_file.read_text())
        return shop_definitions(moved_to(definitions, settings.vhost), settings.shop_broker)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadBackup(f"{path} is corrupt: its RabbitMQ definitions cannot be read ({exc})"
                        ) from exc


async def _check_empty(settings: BackupSettings, queues: set[str], force: bool) -> None:
    services = settings.services()
    rows = await tables_with_rows(settings.admin_dsn, shop_database(services),
                                  [s.schema for s in services])
    waiting = await messages_waiting(settings.management_url, settings.vhost) or {}
    holding = sorted(f"{name} ({count})" for name, count in waiting.items()
                     if name in queues and count)
    if (rows or holding) and not force:
        found = "; ".join(part for part in (
            f"rows in {', '.join(rows)}" if rows else "",
            f"messages in {', '.join(holding)}" if holding else "") if part)
        raise ShopInUse(
            f"this shop is not empty ({found}). A restore replaces a shop that holds data only"
            " when told to: stop its components, then make restore FILE=... FORCE=1"
            " (python -m services.backup restore --force FILE)")


# The command ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parsing = argparse.ArgumentParser(
        prog="python -m services.backup",
        description="A consistent backup of the shop, and the shop back from one.")
    commands = parsing.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="back the shop up into BACKUP_DIR (default: backups/)")
    restoring = commands.add_parser("restore", help="bring the shop back from a backup")
    restoring.add_argument("file", type=Path)
    restoring.add_argument("--force", action="store_true",
                           help="replace the shop even when it holds data")
    commands.add_parser(
        "after-recovery",
        help="after a point-in-time recovery of the database (docs/operations.md): the"
             " bootstrap, the shop's queues emptied, recent events to be sent again")
    return parsing


# What may go wrong on the way: a tool, Postgres or RabbitMQ failing or out of reach.
FAILURES = (RuntimeError, OSError, asyncpg.PostgresError, aiohttp.ClientError)
AFTER_A_FAILED_RESTORE = ("The database is loaded all or nothing; if it was, run the restore"
                          " again, with FORCE=1, once the cause is fixed.")


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    configure_logging("backup")
    settings = BackupSettings()
    try:
        print(asyncio.run(_command(settings, arguments)))
    except Refused as refusal:
        print(f"restore refused: {refusal}. Nothing was changed.", file=sys.stderr)
        return refusal.exit_code
    except FAILURES as exc:
        after = AFTER_A_FAILED_RESTORE if arguments.command == "restore" else ""
        print(f"{arguments.command} failed: {exc}. {after}".strip(), file=sys.stderr)
        return 1
    return 0


async def _command(settings: BackupSettings, arguments: argparse.Namespace) -> str:
    """Runs the command; what it did, in words."""
    if arguments.command == "create":
        path = await create(settings)
        return (f"backup written: {path} ({path.stat().st_size} bytes)\n"
                + ENCRYPT_HINT.format(path=path))
    if arguments.command == "after-recovery":
        return _resend_note(await after_recovery(settings, since=None))
    return await restore(settings, arguments.file, arguments.force)


if __name__ == "__main__":
    sys.exit(main())
