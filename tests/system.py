"""The whole system in the test's event loop: every app on a real socket, the gateway in front."""

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.auth.app import create_app as create_auth
from services.auth.settings import AuthSettings
from services.notifications.app import create_app as create_notifications
from services.notifications.settings import NotificationsSettings
from services.orders.app import create_app as create_orders
from services.orders.settings import OrdersSettings
from services.tracking.app import create_app as create_tracking
from services.tracking.settings import TrackingSettings
from shopkit.bootstrap import ServiceDatabase

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
IDENTITY_SECRET = secrets.token_urlsafe(32)

SERVICES = {
    "auth": (create_auth, AuthSettings),
    "orders": (create_orders, OrdersSettings),
    "tracking": (create_tracking, TrackingSettings),
    "notifications": (create_notifications, NotificationsSettings),
}

# Defaults of the shared test system: a low per-account limit keeps throttling tests short,
# a high per-address one keeps every other test (all from 127.0.0.1) clear of it.
AUTH_TEST_SETTINGS = {"login_max_failures_per_account": 3, "login_max_failures_per_address": 10_000}


def service_settings(database: ServiceDatabase, settings_class: type, **overrides: Any) -> Any:
    return settings_class(
        port=0,
        database_url=database.dsn,
        rabbitmq_url=RABBITMQ_URL,
        identity_secret=IDENTITY_SECRET,
        startup_timeout_seconds=10,
        **overrides,
    )


@dataclass
class System:
    gateway_url: str
    service_urls: dict[str, str]
    settings: dict[str, Any]
    apps: dict[str, web.Application] = field(default_factory=dict)

    @property
    def secret(self) -> bytes:
        return IDENTITY_SECRET.encode()


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@asynccontextmanager
async def running_system(
    databases: dict[str, ServiceDatabase],
    auth: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> AsyncIterator[System]:
    """Starts the four services and a gateway; `auth` and `gateway` override their settings."""
    servers: list[TestServer] = []
    settings: dict[str, Any] = {}
    apps: dict[str, web.Application] = {}
    try:
        urls = {}
        for name, (create_app, settings_class) in SERVICES.items():
            overrides = {**AUTH_TEST_SETTINGS, **(auth or {})} if name == "auth" else {}
            settings[name] = service_settings(databases[name], settings_class, **overrides)
            apps[name] = create_app(settings[name])
            server = await _serve(apps[name])
            servers.append(server)
            urls[name] = str(server.make_url("")).rstrip("/")
        upstreams = {f"{name}_url": url for name, url in urls.items()}
        settings["gateway"] = GatewaySettings(
            port=0, identity_secret=IDENTITY_SECRET, **{**upstreams, **(gateway or {})}
        )
        apps["gateway"] = create_gateway(settings["gateway"])
        gateway_server = await _serve(apps["gateway"])
        servers.append(gateway_server)
        yield System(str(gateway_server.make_url("")).rstrip("/"), urls, settings, apps)
    finally:
        for server in reversed(servers):
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
