"""The restore drill: `make backup` and `make restore` on the real Postgres and RabbitMQ, with
the real processes, in a shop of the drill's own (a database and a vhost `<SHOP_TEST_NAME>_drill`,
bootstrapped as `make db` makes the shop's).

The shop is used (customers, orders moved along, a checkpoint, revoked sessions), then
events are left in flight: some published and waiting in the queues (tracking and
notifications stopped), some not even published (orders cut off from RabbitMQ). Then the
backup, and a change after it. A corrupt or truncated copy of the file is refused, and so is
a restore over a shop that holds data, each changing nothing. Then the database and the vhost
are destroyed and the restore brings the shop back: every row as at the backup, revoked
sessions still revoked, each event in flight applied once by each consumer and none twice, an
old token still good, new orders taken.
"""

import asyncio
import os
import re
import secrets
import shlex
import subprocess
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
from yarl import URL

from services.auth.domain import token_hash
from services.bootstrap import SUBSCRIPTIONS
from shopkit.bootstrap import ServiceDatabase, with_database
from shopkit.broker_access import ShopBroker, export_definitions, management_url_for
from shopkit.topology import declared
from tests.conftest import (
    ADMIN_DSN,
    admin_token_for,
    drop_database,
    own_shop,
    unique_email,
)
from tests.harness import (
    COMPONENTS,
    RABBITMQ_URL,
    TEST_NAME,
    call,
    component_rabbitmq_url,
    create_address,
    create_product,
    drop_vhost,
    eventually,
    login,
    queue_settled,
    register,
)
from tests.processes import (
    INHERITED,
    ROOT,
    LaunchedSystem,
    answers_200,
    free_ports,
    launched_system,
    poll,
)
from tests.system_tests.support import unsettled_orders

pytestmark = pytest.mark.system

DRILL = f"{TEST_NAME}_drill"
SCHEMAS = ["auth", "orders", "tracking", "notifications"]
ADMINISTRATOR = URL(RABBITMQ_URL).with_path(f"/{DRILL}").human_repr()
# What `make backup` and `make restore` run (test_the_makefile_runs_what_the_drill_runs).
COMMAND = ["scripts/with-env", "python", "-m", "services.backup"]
COMMAND_DEADLINE_SECONDS = 60
CONSUMED = [s.queue for s in SUBSCRIPTIONS]
SHOP_QUEUES = sorted(declared(SUBSCRIPTIONS)[0])
BROKER_USERS = [f"{TEST_NAME}_{component}" for component in COMPONENTS]


@dataclass
class Shop:
    environment: dict[str, str]  # what make backup and make restore read, as .env has it
    databases: dict[str, ServiceDatabase]
    db: asyncpg.Pool  # the superuser on the drill's database


@dataclass
class Customer:
    email: str
    token: str
    user_id: str
    address_id: str


@dataclass
class Drill:
    """The shop at its backup, and what the test needs to check it came back."""

    shop: Shop
    backup: Path
    snapshot: dict[str, str]  # shop_digest() at the backup
    admin: str
    customers: list[Customer]
    revoked: dict[str, str]  # token -> its session's id, revoked before the backup
    stock: dict[str, int]  # product id -> stock at the backup
    orders: dict[str, list[str]]  # customer's email -> their orders at the backup
    in_flight: set[str]  # event ids published and waiting in a queue at the backup
    unsent: set[str]  # event ids not yet published at the backup
    after_backup: str  # an order placed after the backup
    events: set[str] = field(default_factory=set)  # every event id of the outboxes at the backup


# The drill's shop ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def shop(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    """The drill's own shop, bootstrapped, with the environment .env would give it."""
    own = await own_shop(DRILL)
    services = own.services
    environment = {**own.environment, "BACKUP_DIR": str(tmp_path_factory.mktemp("backups")),
                   "BACKUP_SIGNING_KEY": secrets.token_urlsafe(32)}
    db = await asyncpg.create_pool(with_database(ADMIN_DSN, DRILL), min_size=1, max_size=2)
    assert db is not None
    yield Shop(environment, {s.schema: s for s in services}, db)
    await db.close()
    await drop_vhost(DRILL)
    await drop_database(DRILL)


@pytest.fixture(scope="module")
async def system(
    shop: Shop, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LaunchedSystem]:
    """One of every component, on the drill's shop."""
    async with launched_system(
        shop.databases, tmp_path_factory.mktemp("drill-processes"),
        env_overrides={c: {"RABBITMQ_URL": component_rabbitmq_url(c, DRILL)} for c in COMPONENTS},
    ) as launched:
        yield launched


async def backup_command(shop: Shop, *arguments: str) -> tuple[int, str, str]:
    """`make backup` / `make restore`'s command, with the drill's shop as .env would name it:
    (exit code, stdout, stderr)."""
    inherited = {key: os.environ[key] for key in INHERITED if key in os.environ}
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *arguments, cwd=ROOT, env={**inherited, **shop.environment},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_DEADLINE_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# What the shop holds ------------------------------------------------------------------------


async def shop_digest(db: asyncpg.Pool) -> dict[str, str]:
    """Every table of the shop, as a digest of its rows; the outboxes' published_at aside (a
    restore marks the recent events unsent, to be sent again)."""
    tables = await db.fetch(
        "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables"
        " WHERE schemaname = any($1::text[])", SCHEMAS)
    # The names come from the catalog, quoted by the server.
    return {t["name"]: await db.fetchval(
        "SELECT md5(coalesce(string_agg(row, ',' ORDER BY row), ''))"
        f" FROM (SELECT (to_jsonb(t) - 'published_at')::text AS row FROM {t['name']} t) rows")
        for t in tables}


async def outbox_events(db: asyncpg.Pool, published: bool | None = None) -> set[str]:
    """The event ids of every outbox (only the published ones, or only the unsent ones)."""
    condition = {None: "true", True: "published_at IS NOT NULL",
                 False: "published_at IS NULL"}[published]
    rows = await db.fetch(" UNION ALL ".join(
        f"SELECT event_id::text FROM {schema}.outbox WHERE {condition}" for schema in SCHEMAS))
    return {r["event_id"] for r in rows}


async def waiting(queue: str) -> int:
    """Messages waiting in a queue of the drill's vhost now (a passive declare)."""
    connection = await aio_pika.connect(ADMINISTRATOR)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def broker_state() -> tuple[object, dict[str, int]]:
    """The shop's definitions and what each of its queues holds."""
    queues, exchanges = declared(SUBSCRIPTIONS)
    shop = ShopBroker(DRILL, frozenset(BROKER_USERS), frozenset(queues), frozenset(exchanges))
    definitions = await export_definitions(management_url_for(RABBITMQ_URL), shop)
    return definitions, {queue: await waiting(queue) for queue in SHOP_QUEUES}


async def drained(db: asyncpg.Pool) -> bool:
    """Every event sent, and every message of the consumers' queues processed."""
    if await outbox_events(db, published=False):
        return False
    return all([await queue_settled(queue, DRILL) for queue in CONSUMED])


# The shop's life before the backup --------------------------------------------------------


async def new_customer(client: aiohttp.ClientSession) -> Customer:
    email = unique_email()
    user = await register(client, email)
    token = await login(client, email)
    return Customer(email, token, user["id"], (await create_address(client, token))["id"])


async def place(client: aiohttp.ClientSession, buyer: Customer, product: str) -> str:
    status, body = await call(client, "POST", "/api/orders", buyer.token, {
        "addressId": buyer.address_id, "items": [{"productId": product, "quantity": 2}]})
    assert status == 201, body
    return body["data"]["id"]


async def move(client: aiohttp.ClientSession, admin: str, order: str, to: str) -> None:
    status, body = await call(client, "POST", f"/api/admin/orders/{order}/status", admin,
                              {"status": to})
    assert status == 200, body


async def revoke_a_session(client: aiohttp.ClientSession, db: asyncpg.Pool,
                           owner: Customer) -> tuple[str, str]:
    """A second session of `owner`, ended by its logout: (its token, its id)."""
    token = await login(client, owner.email)
    session = await db.fetchval("SELECT id::text FROM auth.sessions WHERE token_hash = $1",
                                token_hash(token))
    status, body = await call(client, "POST", "/api/users/logout", token)
    assert status == 200, body
    return token, session


async def cut_off_from_rabbitmq(system: LaunchedSystem, component: str) -> None:
    """`component` restarted with a RabbitMQ URL where nothing listens: it serves requests
    and commits their events, which stay unsent."""
    process = system.processes.processes[component]
    await system.terminate(component)
    process.env["RABBITMQ_URL"] = f"amqp://nobody:nothing@127.0.0.1:{free_ports(1)[0]}/"
    system.processes.start(component)
    await asyncio.to_thread(poll, lambda: answers_200(process.live_url), 30,
                            f"{component} serving")


@pytest.fixture(scope="module")
async def drill(shop: Shop, system: LaunchedSystem) -> Drill:
    db = shop.db
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        admin = await admin_token_for(system.gateway_url, db)
        products = [(await create_product(client, admin, stock=50))["id"] for _ in range(2)]
        ann, bob, cat = [await new_customer(client) for _ in range(3)]
        revoked = dict([await revoke_a_session(client, db, ann)])
        # Orders moved along, a checkpoint, a cancellation: every event applied.
        first, second = await place(client, ann, products[0]), await place(client, ann,
                                                                          products[1])
        third, fourth = await place(client, bob, products[0]), await place(client, cat,
                                                                          products[1])
        for to in ("confirmed", "shipped"):
            await move(client, admin, first, to)
        await move(client, admin, third, "confirmed")
        status, body = await call(client, "POST", f"/api/orders/{fourth}/cancel", cat.token)
        assert status == 200, body
        await eventually(lambda: drained(db), 20)
        status, body = await call(client, "POST", f"/api/admin/orders/{first}/tracking", admin,
                                  {"checkpoint": {"location": "Leipzig hub"}})
        assert status == 200, body
        await eventually(lambda: drained(db), 20)
        applied = await outbox_events(db)

        # In flight: published, waiting in the queues of consumers that are stopped.
        await system.terminate("tracking", "notifications")
        await move(client, admin, second, "confirmed")
        fifth = await place(client, cat, products[0])
        token, session = await revoke_a_session(client, db, bob)
        revoked[token] = session

        async def queued() -> bool:
            return (not await outbox_events(db, published=False)
                    and await waiting("tracking.orders") == 2  # second's move, fifth
                    and await waiting("notifications.events") == 2)  # second's move, bob's
        await eventually(queued, 20)
        in_flight = await outbox_events(db) - applied

        # Unsent: committed by orders, which cannot reach RabbitMQ.
        await cut_off_from_rabbitmq(system, "orders")
        sixth = await place(client, bob, products[1])
        await move(client, admin, third, "shipped")
        unsent = await outbox_events(db, published=False)
        assert len(unsent) == 2

        snapshot = await shop_digest(db)
        events = await outbox_events(db)
        stock = dict(await db.fetch("SELECT id::text, stock FROM orders.products"))
        code, out, err = await backup_command(shop, "create")
        assert code == 0, (out, err)
        match = re.search(r"^backup written: (\S+) ", out, re.MULTILINE)
        assert match, out
        # Nothing moved while it was taken: the snapshot is the shop as it was then.
        assert await shop_digest(db) == snapshot

        after_backup = await place(client, ann, products[0])
    return Drill(
        shop=shop, backup=Path(match.group(1)), snapshot=snapshot, admin=admin,
        customers=[ann, bob, cat], revoked=revoked, stock=stock,
        orders={ann.email: [first, second], bob.email: [third, sixth],
                cat.email: [fourth, fifth]},
        in_flight=in_flight, unsent=unsent, after_backup=after_backup, events=events)


# The drill ----------------------------------------------------------------------------------


def test_the_makefile_runs_what_the_drill_runs() -> None:
    assert _recipe("backup") == [*COMMAND, "create"]
    assert _recipe("restore", "FILE=b.tar") == [*COMMAND, "restore", "--", "b.tar"]
    assert _recipe("restore", "FILE=b.tar", "FORCE=1") == [*COMMAND, "restore", "--force",
                                                           "--", "b.tar"]
    # The file's name reaches the command from the environment, as one argument: make never
    # writes it into the shell's text, where backquotes in it would run.
    printed = _printed("restore", "FILE=a`touch x`.tar")
    assert '"$FILE"' in printed and "touch" not in printed


def _printed(target: str, *variables: str) -> str:
    """The last command `make` would run for `target` (make -n prints, runs nothing)."""
    printed = subprocess.run(["make", "-n", "--no-print-directory", target, *variables],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return printed.strip().splitlines()[-1]


def _recipe(target: str, *variables: str) -> list[str]:
    """That command's words, with FILE as the recipe's shell would expand it."""
    given = dict(variable.split("=", 1) for variable in variables)
    line = _printed(target, *variables).replace('"$FILE"', shlex.quote(given.get("FILE", "")))
    return shlex.split(line)


async def test_the_backup_is_one_file_readable_by_its_owner_alone(drill: Drill) -> None:
    assert drill.backup.parent == Path(drill.shop.environment["BACKUP_DIR"])
    assert re.fullmatch(rf"{DRILL}-\d{{8}}T\d{{6}}Z\.tar", drill.backup.name)
    assert drill.backup.stat().st_mode & 0o777 == 0o600
    with tarfile.open(drill.backup) as tar:
        assert tar.getnames() == ["database.dump", "broker.json", "manifest.json",
                                  "manifest.hmac-sha256"]
        text = b"".join(_read(tar, name) for name in ("broker.json", "manifest.json"))
    for secret in {s.password for s in drill.shop.databases.values()} | {
            URL(component_rabbitmq_url(c)).password for c in COMPONENTS}:
        assert secret and secret.encode() not in text  # users carry password hashes only


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None
    return member.read()


async def test_a_corrupt_or_truncated_backup_is_refused_and_changes_nothing(
    drill: Drill, tmp_path: Path
) -> None:
    whole = drill.backup.read_bytes()
    with tarfile.open(drill.backup) as tar:
        dump = tar.getmember("database.dump")
    corrupt = bytearray(whole)
    corrupt[dump.offset_data + dump.size // 2] ^= 0x01  # one bit of the dump
    cases = {"corrupt": (bytes(corrupt), "is corrupt: database.dump"),
             "truncated": (whole[:len(whole) // 2], "cut short")}
    before = await shop_digest(drill.shop.db), await broker_state()
    for name, (content, says) in cases.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(content)
        # Told to replace the shop, even: the file is checked before anything is touched.
        code, out, err = await backup_command(drill.shop, "restore", "--force", str(path))
        assert code == 2, (name, out, err)
        assert says in err and "Nothing was changed." in err, (name, err)
    assert (await shop_digest(drill.shop.db), await broker_state()) == before


async def test_a_shop_that_holds_data_is_not_replaced_unless_told_to(drill: Drill) -> None:
    before = await shop_digest(drill.shop.db), await broker_state()
    code, out, err = await backup_command(drill.shop, "restore", str(drill.backup))
    assert code == 3, (out, err)
    assert "this shop is not empty (rows in" in err and "FORCE=1" in err, err
    assert (await shop_digest(drill.shop.db), await broker_state()) == before


async def test_the_shop_comes_back_from_its_backup_and_every_event_is_applied_once(
    drill: Drill, system: LaunchedSystem
) -> None:
    db = drill.shop.db
    await system.terminate()
    await drop_database(DRILL)
    await drop_vhost(DRILL)

    code, out, err = await backup_command(drill.shop, "restore", str(drill.backup))
    assert code == 0, (out, err)
    await db.expire_connections()
    # Every row as at the backup: users, sessions, addresses, orders, stock, timelines,
    # notifications, inboxes; the change made after it is not there.
    assert await shop_digest(db) == drill.snapshot
    assert not await db.fetchval("SELECT count(*) FROM orders.orders WHERE id = $1",
                                 drill.after_backup)
    # Unsent: what was, and what was sent in the hour before (any of it may have waited).
    assert await outbox_events(db, published=False) == drill.events
    assert drill.in_flight and drill.unsent and drill.in_flight | drill.unsent <= drill.events

    await running_as_usual(system)
    await eventually(lambda: drained(db), 30)
    await _every_event_applied_once(drill)
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        await _the_customers_find_their_shop(client, drill)
        # New orders are taken, and followed.
        buyer, product = drill.customers[2], next(iter(drill.stock))
        placed = await place(client, buyer, product)
        await eventually(lambda: drained(db), 20)
        assert await unsettled_orders(db, [buyer.user_id]) == []
        status, body = await call(client, "GET", f"/api/orders/{placed}/tracking", buyer.token)
        assert status == 200 and body["data"]["status"] == "placed", body
        status, body = await call(client, "GET", f"/api/products/{product}")
        assert body["data"]["stock"] == drill.stock[product] - 2


async def _every_event_applied_once(drill: Drill) -> None:
    """Per order: tracking at its version with one timeline entry per version, one
    notification per status change, the checkpoint's once; each revocation recorded once;
    nothing dead-lettered (a repeat the inbox let through would fail on the tables' keys)."""
    db = drill.shop.db
    users = [c.user_id for c in drill.customers]
    assert await unsettled_orders(db, users) == []
    assert await db.fetchval("SELECT count(*) FROM notifications.notifications"
                             " WHERE type <> 'order_status'") == 1  # the checkpoint
    revocations = await db.fetch(
        "SELECT session_id::text, count(*) FROM notifications.revoked_sessions"
        " GROUP BY session_id")
    assert dict(revocations) == {session: 1 for session in drill.revoked.values()}
    for queue in SHOP_QUEUES:
        assert await waiting(queue) == 0, queue


async def _the_customers_find_their_shop(client: aiohttp.ClientSession, drill: Drill) -> None:
    for customer in drill.customers:
        # A token issued before the backup still works.
        status, body = await call(client, "GET", "/api/users/me", customer.token)
        assert status == 200 and body["data"]["email"] == customer.email, body
        status, body = await call(client, "GET", "/api/orders", customer.token)
        assert status == 200, body
        assert {o["id"] for o in body["data"]["items"]} == set(drill.orders[customer.email])
        status, body = await call(client, "GET", "/api/addresses", customer.token)
        assert [a["id"] for a in body["data"]["items"]] == [customer.address_id], body
    for token in drill.revoked:  # revoked sessions stay revoked
        status, body = await call(client, "GET", "/api/users/me", token)
        assert status == 401, body
    for product, stock in drill.stock.items():
        status, body = await call(client, "GET", f"/api/products/{product}")
        assert body["data"]["stock"] == stock, body
    first = drill.orders[drill.customers[0].email][0]
    status, body = await call(client, "GET", f"/api/orders/{first}/tracking",
                              drill.customers[0].token)
    assert [(e["status"], e["location"]) for e in body["data"]["timeline"]] == [
        ("placed", None), ("confirmed", None), ("shipped", None), ("shipped", "Leipzig hub")]


async def test_a_restore_told_to_replaces_a_shop_that_holds_data(
    drill: Drill, system: LaunchedSystem
) -> None:
    """Over a shop that went on after the backup, with an event of that time still waiting in
    a queue: the shop is back at the backup, and that event is never applied."""
    db = drill.shop.db
    await running_as_usual(system)
    await eventually(lambda: drained(db), 30)
    await system.terminate("tracking")
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        later = await place(client, drill.customers[1], next(iter(drill.stock)))

    async def waits() -> bool:
        return not await outbox_events(db, published=False) and await waiting(
            "tracking.orders") == 1
    await eventually(waits, 20)
    await system.terminate()

    code, out, err = await backup_command(drill.shop, "restore", "--force", str(drill.backup))
    assert code == 0, (out, err)
    await db.expire_connections()
    assert await shop_digest(db) == drill.snapshot
    await running_as_usual(system)
    await eventually(lambda: drained(db), 30)
    assert not await db.fetchval("SELECT count(*) FROM tracking.trackings WHERE order_id = $1",
                                 later)
    await _every_event_applied_once(drill)


async def running_as_usual(system: LaunchedSystem) -> None:
    """Every component running and ready, orders on its own RabbitMQ URL again."""
    orders = system.processes.processes["orders"]
    usual = component_rabbitmq_url("orders", DRILL)
    if orders.env["RABBITMQ_URL"] != usual:
        await system.terminate("orders")
        orders.env["RABBITMQ_URL"] = usual
    await system.revive()
