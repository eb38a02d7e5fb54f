"""The test harness: the whole system in the test's event loop (every app on a real socket, the
gateway in front), and the calls tests make of it."""

import asyncio
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from yarl import URL

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.auth.app import create_app as create_auth
from services.auth.domain import token_hash
from services.auth.settings import AuthSettings
from services.notifications.app import create_app as create_notifications
from services.notifications.settings import NotificationsSettings
from services.orders.app import create_app as create_orders
from services.orders.settings import OrdersSettings
from services.tracking.app import create_app as create_tracking
from services.tracking.settings import TrackingSettings
from shopkit.bootstrap import ServiceDatabase
from shopkit.identity import IdentityKey
from shopkit.operator import METRICS_URL_KEY
from shopkit.runner import connection_options
from shopkit.server import EnvelopeAppRunner
from shopkit.settings import ComponentSettings

# Tests use a database, roles and a virtual host of their own, recreated per run: durable
# queues such as tracking.orders never mix with those of a `make run` on the same broker.
# SHOP_TEST_NAME lets two runs on one machine keep apart.
TEST_NAME = os.environ.get("SHOP_TEST_NAME", "shop_test")
TEST_VHOST = TEST_NAME
# The broker's administrator, in the test vhost: what the bootstrap (and the tests' own
# watching and publishing) connects as.
RABBITMQ_URL = (
    URL(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    .with_path(f"/{TEST_VHOST}")
    .human_repr()
)
COMPONENTS = ("auth", "orders", "tracking", "notifications", "gateway")
# Each component's own RabbitMQ user in the test vhost (made by the session's bootstrap of the
# broker, with the rights shopkit.broker_access gives it).
BROKER_PASSWORDS = {name: secrets.token_urlsafe(16) for name in COMPONENTS}


def component_rabbitmq_url(component: str, vhost: str = TEST_VHOST) -> str:
    return (
        URL(RABBITMQ_URL)
        .with_path(f"/{vhost}")
        .with_user(f"{TEST_NAME}_{component}")
        .with_password(BROKER_PASSWORDS[component])
        .human_repr()
    )


# One identity key per service, as the gateway holds them.
IDENTITY_SECRETS = {name: secrets.token_urlsafe(32) for name in COMPONENTS[:4]}


def identity_key(service: str) -> IdentityKey:
    return IdentityKey(service, IDENTITY_SECRETS[service].encode())


def gateway_secrets() -> dict[str, str]:
    """The gateway's settings that hold the services' identity keys."""
    return {f"{name}_identity_secret": secret for name, secret in IDENTITY_SECRETS.items()}


SERVICES = {
    "auth": (create_auth, AuthSettings),
    "orders": (create_orders, OrdersSettings),
    "tracking": (create_tracking, TrackingSettings),
    "notifications": (create_notifications, NotificationsSettings),
}

# Defaults of the shared test system: a low limit per account and address keeps throttling
# tests short; the limits every test meets from 127.0.0.1 (per address, registrations, open
# orders of the users the race tests make) are out of the way. Tests of those limits run
# systems of their own.
TEST_SETTINGS: dict[str, dict[str, Any]] = {
    "auth": {"login_max_failures_per_account_and_address": 3,
             "login_max_failures_per_account": 50,
             "login_max_failures_per_address": 10_000,
             "registrations_per_address": 1_000_000},
    "orders": {"max_open_orders_per_user": 1_000},
}


def service_settings(
    name: str, database: ServiceDatabase, settings_class: type, **overrides: Any
) -> Any:
    defaults = {
        "port": 0,
        "metrics_port": 0,
        "database_url": database.dsn,
        "rabbitmq_url": component_rabbitmq_url(name),
        "identity_secret": IDENTITY_SECRETS[name],
        "startup_timeout_seconds": 10,
        # Short retry delays keep the retry-then-dead-letter tests quick.
        "consumer_retry_delay_seconds": 0.05,
    }
    return settings_class(**{**defaults, **overrides})


@dataclass
class System:
    gateway_url: str
    service_urls: dict[str, str]
    settings: dict[str, Any]
    apps: dict[str, web.Application] = field(default_factory=dict)
    servers: dict[str, "_Served"] = field(default_factory=dict)

    def metrics_url(self, component: str) -> str:
        return self.apps[component][METRICS_URL_KEY]

    async def stop(self, service: str) -> None:
        """Stops one service, as if its process ended: its port refuses connections."""
        await self.servers[service].close()

    async def start(self, service: str) -> None:
        """Starts a fresh instance of a stopped service on its old port, as a restarted
        process would come back."""
        create_app, _ = SERVICES[service]
        self.apps[service] = create_app(self.settings[service])
        port = URL(self.service_urls[service]).port or 0
        self.servers[service] = await _serve(self.apps[service], self.settings[service], port)


@dataclass
class _Served:
    """An app served as the components serve theirs (shopkit.runner), on a port of its own."""

    runner: web.AppRunner
    url: str
    closed: bool = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.runner.cleanup()


async def _serve(app: web.Application, settings: ComponentSettings, port: int = 0) -> _Served:
    runner = EnvelopeAppRunner(app, **connection_options(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, port = runner.addresses[0][:2]
    return _Served(runner, f"http://{host}:{port}")


@asynccontextmanager
async def running_system(
    databases: dict[str, ServiceDatabase], **overrides: dict[str, Any]
) -> AsyncIterator[System]:
    """Starts the four services and a gateway; `auth={...}`, `gateway={...}` and so on
    override that component's settings."""
    servers: dict[str, _Served] = {}
    settings: dict[str, Any] = {}
    apps: dict[str, web.Application] = {}
    try:
        urls = {}
        for name, (create_app, settings_class) in SERVICES.items():
            settings[name] = service_settings(
                name, databases[name], settings_class,
                **{**TEST_SETTINGS.get(name, {}), **overrides.get(name, {})},
            )
            apps[name] = create_app(settings[name])
            servers[name] = await _serve(apps[name], settings[name])
            urls[name] = servers[name].url
        settings["gateway"] = gateway_settings(urls, **overrides.get("gateway", {}))
        apps["gateway"] = create_gateway(settings["gateway"])
        servers["gateway"] = await _serve(apps["gateway"], settings["gateway"])
        yield System(servers["gateway"].url, urls, settings, apps, servers)
    finally:
        for server in reversed(servers.values()):
            await server.close()


def gateway_settings(service_urls: dict[str, str], **overrides: Any) -> GatewaySettings:
    upstreams = {f"{name}_url": url for name, url in service_urls.items()}
    return GatewaySettings(**{
        "port": 0, "metrics_port": 0, "rabbitmq_url": component_rabbitmq_url("gateway"),
        **gateway_secrets(), **upstreams, **overrides,
    })


@asynccontextmanager
async def another_gateway(system: System, **overrides: Any) -> AsyncIterator[str]:
    """A second gateway instance in front of the same services; yields its URL."""
    settings = gateway_settings(system.service_urls, **overrides)
    server = await _serve(create_gateway(settings), settings)
    try:
        yield server.url
    finally:
        await server.close()


async def register(
    client: aiohttp.ClientSession, email: str, password: str = "correct horse", name: str = "Ann"
) -> dict[str, Any]:
    async with client.post(
        "/api/users/register", json={"email": email, "password": password, "name": name}
    ) as response:
        body = await response.json()
        assert response.status == 201, body
        return body["data"]


async def login(
    client: aiohttp.ClientSession, email: str, password: str = "correct horse", **headers: str
) -> str:
    async with client.post(
        "/api/users/login", json={"email": email, "password": password}, headers=headers
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return body["data"]["token"]


async def admin_login(
    client: aiohttp.ClientSession, email: str, password: str = "correct horse"
) -> str:
    """A session with an admin's rights (the account must be an admin's)."""
    async with client.post(
        "/api/admin/login", json={"email": email, "password": password}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return body["data"]["token"]


async def session_changed(
    client: aiohttp.ClientSession, admin_db: Any, change: str, *args: Any
) -> str:
    """A new user's session token, its row changed behind the services' back: `change` is the
    SET clause of an UPDATE of auth.sessions (its own parameters from $2 on). The token was
    not used through the gateway yet, so no gateway holds auth's earlier answer for it."""
    email = f"user-{secrets.token_hex(6)}@example.com"
    await register(client, email)
    token = await login(client, email)
    await admin_db.execute(
        f"UPDATE auth.sessions SET {change} WHERE token_hash = $1", token_hash(token), *args
    )
    return token


def loopback_address() -> str:
    """An address of 127.0.0.0/8 of the test's own: to the gateway, another client."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@asynccontextmanager
async def client_from(base_url: str, address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from `address` (one of this machine's)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    token: str | None = None,
    json: Any = None,
    **headers: str,
) -> tuple[int, Any]:
    """One request through the gateway: (status, parsed body)."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with client.request(method, path, json=json, headers=headers) as response:
        return response.status, await response.json()


def address_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "label": "Home",
        "recipient": "Ann Example",
        "line1": "1 Main Street",
        "line2": None,
        "city": "Springfield",
        "postalCode": "12345",
        "country": "US",
        "phone": "+1 555 0100",
        **overrides,
    }


async def create_product(
    client: aiohttp.ClientSession, admin_token: str, stock: int, price_cents: int = 1250
) -> dict[str, Any]:
    sku = f"SKU-{secrets.token_hex(6)}"
    status, body = await call(
        client, "POST", "/api/admin/products", admin_token,
        {"sku": sku, "name": f"Product {sku}", "priceCents": price_cents, "stock": stock},
    )
    assert status == 201, body
    return body["data"]


async def create_address(
    client: aiohttp.ClientSession, token: str, **overrides: Any
) -> dict[str, Any]:
    status, body = await call(client, "POST", "/api/addresses", token, address_payload(**overrides))
    assert status == 201, body
    return body["data"]


async def wait_until_ready(client: aiohttp.ClientSession, deadline_seconds: float = 15) -> None:
    """Services connect to RabbitMQ in the background; poll /api/ping until all are ready."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        async with client.get("/api/ping") as response:
            if response.status == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("services did not become ready")


async def fresh_vhost(vhost: str = TEST_VHOST) -> None:
    """Deletes and recreates a test virtual host, open to the URL's user."""
    user = URL(RABBITMQ_URL).user or "guest"
    await _rabbitmqctl("delete_vhost", vhost, check=False)
    await _rabbitmqctl("add_vhost", vhost)
    await _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")


async def drop_vhost(vhost: str) -> None:
    await _rabbitmqctl("delete_vhost", vhost, check=False)


async def _rabbitmqctl(*args: str, check: bool = True) -> str:
    """Runs rabbitmqctl on the local broker; returns what it printed."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is needed to manage the local broker"
    process = await asyncio.create_subprocess_exec(
        rabbitmqctl, *args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    output, _ = await process.communicate()
    assert process.returncode == 0 or not check, f"rabbitmqctl {' '.join(args)} failed"
    return output.decode()


@asynccontextmanager
async def rabbitmq_stopped(system: System) -> AsyncIterator[None]:
    """The RabbitMQ application stopped for the block; always started again after it, and the
    system ready once more before the next test."""
    await _rabbitmqctl("stop_app")
    try:
        yield
    finally:
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")
        async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
            await wait_until_ready(client, deadline_seconds=60)


async def walk_pages(
    client: aiohttp.ClientSession, path: str, token: str | None = None, limit: int = 2
) -> list[dict[str, Any]]:
    """Every item of a list endpoint, following nextCursor page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    separator = "&" if "?" in path else "?"
    while True:
        page = f"{path}{separator}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body = await call(client, "GET", page, token)
        assert status == 200, body
        assert len(body["data"]["items"]) <= limit
        items += body["data"]["items"]
        cursor = body["data"]["nextCursor"]
        if cursor is None:
            return items


async def new_customer(client: aiohttp.ClientSession) -> tuple[str, str]:
    """A freshly registered user's token and the id of their (default) address."""
    email = f"user-{secrets.token_hex(6)}@example.com"
    await register(client, email)
    token = await login(client, email)
    return token, (await create_address(client, token))["id"]


async def eventually(
    check: Any, deadline_seconds: float = 15, interval: float = 0.02
) -> Any:
    """Polls `await check()` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {deadline_seconds} s: {result!r}")
        await asyncio.sleep(interval)


async def queue_settled(name: str, vhost: str = TEST_VHOST) -> bool:
    """No message of the queue left, neither waiting nor delivered and unacknowledged. Read
    as it is now: the counts `list_queues` gives of a quorum queue are refreshed every few
    seconds, so the waiting ones come from a passive declare and the unacknowledged ones from
    the channels of the queue's consumers."""
    connection = await aio_pika.connect(URL(RABBITMQ_URL).with_path(f"/{vhost}").human_repr())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        if queue.declaration_result.message_count:
            return False
    consumers = await _rabbitmqctl(
        "list_consumers", "-p", vhost, "-q", "--no-table-headers", "queue_name",
        "channel_pid",
    )
    channels = {line.split()[1] for line in consumers.splitlines()
                if line.strip() and line.split()[0] == name}
    unacknowledged = await _rabbitmqctl(
        "list_channels", "-p", vhost, "-q", "--no-table-headers", "pid",
        "messages_unacknowledged",
    )
    return not any(
        int(count) for pid, count in (line.split() for line in unacknowledged.splitlines()
                                      if line.strip())
        if pid in channels
    )


async def queue_consumers(name: str) -> int:
    """How many consumers the queue has now, on every connection together (list_consumers
    is current; the count `list_queues` gives of a quorum queue lags)."""
    output = await _rabbitmqctl(
        "list_consumers", "-p", TEST_VHOST, "-q", "--no-table-headers", "queue_name"
    )
    return output.split().count(name)


async def place_order(
    client: aiohttp.ClientSession, token: str, admin_token: str, quantity: int = 1
) -> dict[str, Any]:
    """An order of a fresh product to a fresh address of the user's, through the gateway."""
    address = await create_address(client, token)
    product = await create_product(client, admin_token, stock=10)
    status, body = await call(
        client, "POST", "/api/orders", token,
        {"addressId": address["id"], "items": [{"productId": product["id"], "quantity": quantity}]},
        **{"X-Request-Id": f"place-{secrets.token_hex(4)}"},
    )
    assert status == 201, body
    return body["data"]


def _cluster_version() -> str:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    assert clusters and shutil.which("pg_ctlcluster"), "needs the local Debian Postgres cluster"
    return clusters[-1]


async def _pg_ctlcluster(action: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", _cluster_version(), "main", action,
        *(["-m", "fast"] if action == "stop" else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert await process.wait() == 0, f"pg_ctlcluster {action} failed"


@asynccontextmanager
async def postgres_stopped(*pools: Any) -> AsyncIterator[None]:
    """The local Postgres cluster stopped for the block, always started again after it; the
    test's own pools drop the connections the stop broke."""
    await _pg_ctlcluster("stop")
    try:
        yield
    finally:
        await _pg_ctlcluster("start")
        for pool in pools:
            await pool.expire_connections()


@asynccontextmanager
async def event_stream(
    base_url: str, token: str, last_event_id: str | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A notification stream (SSE) opened through the gateway, headers received."""
    async with stream_attempt(base_url, token, last_event_id) as response:
        assert response.status == 200, response.status
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield response


@asynccontextmanager
async def stream_attempt(
    base_url: str, token: str, last_event_id: str | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """An attempt to open a notification stream, whatever its answer."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with aiohttp.ClientSession(base_url=base_url, timeout=timeout) as session, session.get(
        "/api/notifications/stream", headers=headers
    ) as response:
        yield response


async def next_sse_event(response: aiohttp.ClientResponse) -> dict[str, str]:
    """Reads one event (lines up to a blank one), skipping comment-only keep-alives."""
    fields: dict[str, str] = {}
    while True:
        line = (await response.content.readline()).decode().rstrip("\r\n")
        if line == "":
            if fields:
                return fields
            if response.content.at_eof():
                raise EOFError("the stream ended")
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


async def stream_ends(response: aiohttp.ClientResponse, deadline_seconds: float = 15) -> None:
    """Returns once the stream has ended (pings, if any, are read past); fails at the
    deadline."""
    async with asyncio.timeout(deadline_seconds):
        while await response.content.readline():
            pass
