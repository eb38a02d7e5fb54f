"""Seeds a running shop for the demo through its public API (the gateway, over HTTP), the way a
client of the shop would: the catalogue, the demo shopper with an address and an order on its
way. Every step first looks at what is there, so seeding twice changes nothing.

The demo admin is the one thing the API cannot make: `ensure_admin` makes it with
`python -m services.auth create-admin`, as the contract says admins are made, in a step of its
own before `seed`.
"""

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import aiohttp

from demo import catalogue
from services.orders.orders.domain import OrderStatus, can_move

# How long the shop may take to get ready, and to carry an event from one service to another.
READY_SECONDS = 90.0
EVENT_SECONDS = 30.0
POLL_SECONDS = 0.2


class DemoError(Exception):
    """Seeding cannot go on; the message says why, for a person."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str


@dataclass(frozen=True)
class Seeded:
    products_added: int
    order_id: str
    order_status: str


class Api:
    """Calls to the gateway: each answer's `data`, or a DemoError naming the call and why."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self, method: str, path: str, token: str | None = None, json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            async with self.session.request(method, path, json=json, headers=headers) as answer:
                return answer.status, await answer.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise DemoError(f"{method} {path} failed: {exc}") from exc

    async def call(
        self, method: str, path: str, token: str | None = None, json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        status, body = await self.request(method, path, token, json, headers)
        if status not in (200, 201):
            raise DemoError(f"{method} {path} answered {status}: {_why(body)}")
        return body["data"]

    async def all_pages(self, path: str, token: str | None = None) -> list[dict[str, Any]]:
        """Every item of a list endpoint, page after page."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = f"{path}?limit=100" + (f"&cursor={cursor}" if cursor else "")
            data = await self.call("GET", page, token)
            items += data["items"]
            cursor = data["nextCursor"]
            if cursor is None:
                return items

    async def sign_in(self, path: str, account: Account) -> str | None:
        """A session token, or None when the email and password do not sign in there."""
        status, body = await self.request(
            "POST", path, json={"email": account.email, "password": account.password}
        )
        if status == 401:
            return None
        if status != 200:
            raise DemoError(f"POST {path} for {account.email} answered {status}: {_why(body)}")
        return str(body["data"]["token"])

    async def sign_out(self, token: str) -> None:
        # The seed's sessions are of no use to anyone after it; best effort.
        with contextlib.suppress(DemoError):
            await self.request("POST", "/api/users/logout", token)


def _why(body: dict[str, Any]) -> str:
    return f"{body.get('code')}: {body.get('error')} {body.get('details') or ''}".strip()


async def _until(check: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
    """Polls `check` until it returns something truthy; DemoError at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not so within {seconds:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


# The shop being up and the admin ------------------------------------------------------------


async def wait_for_gateway(gateway_url: str, seconds: float = READY_SECONDS) -> None:
    """Until the gateway's /api/ping says every service is ready."""
    async with aiohttp.ClientSession(base_url=gateway_url) as session:
        async def ready() -> bool:
            try:
                async with session.get("/api/ping") as answer:
                    return answer.status == 200
            except aiohttp.ClientError:
                return False  # not listening yet

        await _until(ready, seconds, f"{gateway_url}/api/ping answering 200")


async def ensure_admin(gateway_url: str, admin: Account, auth_env: Mapping[str, str]) -> str:
    """Makes the demo admin unless it already signs in through the admin login: so a rerun
    leaves the admin, and the sessions it has open, alone. `auth_env` is the environment auth
    runs with (its DATABASE_URL, IDENTITY_SECRET, RABBITMQ_URL). Returns what was done."""
    async with aiohttp.ClientSession(base_url=gateway_url) as session:
        api = Api(session)
        token = await api.sign_in("/api/admin/login", admin)
        if token is not None:
            await api.sign_out(token)
            return "exists"
    await create_admin(admin, auth_env)
    return "created"


async def create_admin(admin: Account, auth_env: Mapping[str, str]) -> None:
    """`python -m services.auth create-admin EMAIL`, the password in ADMIN_PASSWORD."""
    env = {**auth_env, "ADMIN_PASSWORD": admin.password, "ADMIN_NAME": catalogue.ADMIN_NAME}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.auth", "create-admin", admin.email,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise DemoError(f"create-admin {admin.email} failed: {output.decode().strip()}")


def auth_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Auth's environment from `make run`'s (.env's AUTH_* values), as `make admin` maps it."""
    try:
        return {**environ, "DATABASE_URL": environ["AUTH_DATABASE_URL"],
                "IDENTITY_SECRET": environ["AUTH_IDENTITY_SECRET"],
                "RABBITMQ_URL": environ["AUTH_RABBITMQ_URL"]}
    except KeyError as exc:
        raise DemoError(f"{exc.args[0]} is not set (scripts/dev-env writes it into .env)") from exc


# Seeding through the API ---------------------------------------------------------------------


async def seed(gateway_url: str, admin: Account, shopper: Account) -> Seeded:
    """The catalogue, the shopper, their address and their order shipped with tracking
    details and a checkpoint; each only where it is not there yet. The admin must exist."""
    async with aiohttp.ClientSession(base_url=gateway_url) as session:
        api = Api(session)
        admin_token = await api.sign_in("/api/admin/login", admin)
        if admin_token is None:
            raise DemoError(f"the demo admin {admin.email} does not sign in through the admin "
                            "login with DEMO_ADMIN_PASSWORD")
        try:
            products, added = await ensure_catalogue(api, admin_token)
            shopper_token = await ensure_shopper(api, shopper)
            try:
                address_id = await ensure_address(api, shopper_token)
                order = await ensure_order(api, shopper_token, address_id, products)
            finally:
                await api.sign_out(shopper_token)
            order = await move_along(api, admin_token, order)
            await ensure_tracking(api, admin_token, order)
        finally:
            await api.sign_out(admin_token)
    return Seeded(added, order["id"], order["status"])


async def ensure_catalogue(api: Api, admin_token: str) -> tuple[dict[str, str], int]:
    """Every demo product, by SKU: those missing are added. Returns (product id by SKU,
    how many were added)."""
    ids = {p["sku"]: p["id"] for p in await api.all_pages("/api/products")}
    added = 0
    for product in catalogue.PRODUCTS:
        if product.sku in ids:
            continue
        status, body = await api.request("POST", "/api/admin/products", admin_token, {
            "sku": product.sku, "name": product.name,
            "priceCents": product.price_cents, "stock": product.stock,
        })
        if status == 201:
            ids[product.sku] = body["data"]["id"]
            added += 1
        elif body.get("code") != "sku_taken":  # taken: added meanwhile, found below
            raise DemoError(f"adding {product.sku} answered {status}: {_why(body)}")
    if any(p.sku not in ids for p in catalogue.PRODUCTS):
        ids = {p["sku"]: p["id"] for p in await api.all_pages("/api/products")}
    return ids, added


async def ensure_shopper(api: Api, shopper: Account) -> str:
    """The shopper registered (once) and signed in; their session token."""
    status, body = await api.request("POST", "/api/users/register", json={
        "email": shopper.email, "password": shopper.password, "name": catalogue.SHOPPER_NAME,
    })
    if status != 201 and body.get("code") != "email_taken":
        raise DemoError(f"registering {shopper.email} answered {status}: {_why(body)}")
    token = await api.sign_in("/api/users/login", shopper)
    if token is None:
        raise DemoError(f"the demo shopper {shopper.email} exists but DEMO_SHOPPER_PASSWORD "
                        "does not sign it in (was it changed in .env?)")
    return token


async def ensure_address(api: Api, token: str) -> str:
    """The shopper's default address, added when they have none; its id."""
    addresses = await api.all_pages("/api/addresses", token)
    if not addresses:
        return str((await api.call("POST", "/api/addresses", token, catalogue.ADDRESS))["id"])
    # A shopper with addresses always has exactly one default.
    return str(next(a["id"] for a in addresses if a["isDefault"]))


async def ensure_order(
    api: Api, token: str, address_id: str, products: dict[str, str]
) -> dict[str, Any]:
    """The shopper's first order: placed when they have none. Orders list newest first, so
    the demo's is the last, whatever the newcomer ordered since."""
    orders = await api.all_pages("/api/orders", token)
    if orders:
        return orders[-1]
    items = [{"productId": products[sku], "quantity": n} for sku, n in catalogue.ORDER_LINES]
    return dict(await api.call(
        "POST", "/api/orders", token,
        {"addressId": address_id, "items": items, "note": catalogue.ORDER_NOTE},
        headers={"Idempotency-Key": catalogue.ORDER_IDEMPOTENCY_KEY},
    ))


async def move_along(api: Api, admin_token: str, order: dict[str, Any]) -> dict[str, Any]:
    """The order moved through the demo's statuses, forward only: a step it is at or past
    already is skipped."""
    for target, note in catalogue.STATUS_STEPS:
        current = OrderStatus(order["status"])
        if current is OrderStatus.CANCELLED:
            raise DemoError(f"the demo order {order['id']} was cancelled (an order left "
                            "placed expires), so it cannot be shipped any more")
        if can_move(current, OrderStatus(target)):
            order = await api.call("POST", f"/api/admin/orders/{order['id']}/status",
                                   admin_token, {"status": target, "note": note})
    return order


async def ensure_tracking(api: Api, admin_token: str, order: dict[str, Any]) -> dict[str, Any]:
    """Delivery details and the checkpoint, each unless there. Tracking is made from the
    order's events: this waits until it has followed the order to its status, so the
    checkpoint lands after the status changes in the timeline."""
    path = f"/api/orders/{order['id']}/tracking"

    async def caught_up() -> dict[str, Any] | None:
        status, body = await api.request("GET", path, admin_token)
        if status == 200 and body["data"]["status"] == order["status"]:
            return dict(body["data"])
        if status not in (200, 404):  # 404: the order.created event not consumed yet
            raise DemoError(f"GET {path} answered {status}: {_why(body)}")
        return None

    tracking = await _until(caught_up, EVENT_SECONDS,
                            f"tracking of order {order['id']} at status {order['status']}")
    change = tracking_change(tracking, order["id"], date.today())
    if not change:
        return tracking
    return dict(await api.call("POST", f"/api/admin/orders/{order['id']}/tracking",
                               admin_token, change))


def tracking_change(tracking: dict[str, Any], order_id: str, today: date) -> dict[str, Any]:
    """What the tracking lacks of the demo's: the carrier's details, the checkpoint."""
    change: dict[str, Any] = {}
    if tracking["carrier"] is None:
        change["carrier"] = catalogue.CARRIER
    if tracking["trackingNumber"] is None:
        change["trackingNumber"] = tracking_number(order_id)
    if tracking["estimatedDelivery"] is None:
        change["estimatedDelivery"] = (today + timedelta(days=catalogue.DELIVERY_DAYS)).isoformat()
    if all(e["location"] != catalogue.CHECKPOINT["location"] for e in tracking["timeline"]):
        change["checkpoint"] = catalogue.CHECKPOINT
    return change


def tracking_number(order_id: str) -> str:
    """A carrier-like number, the same for the order each time it is made."""
    return f"JJD{int(order_id.replace('-', ''), 16) % 10**14:014d}"


ADMIN_EMAIL = "admin@demo.shop"
SHOPPER_EMAIL = "shopper@demo.shop"


def demo_accounts(environ: Mapping[str, str] = os.environ) -> tuple[Account, Account]:
    """(admin, shopper), with the passwords scripts/dev-env generated into .env."""
    def password(name: str) -> str:
        value = environ.get(name)
        if not value:
            raise DemoError(f"{name} is not set: scripts/dev-env writes it into .env")
        return value

    return (Account(ADMIN_EMAIL, password("DEMO_ADMIN_PASSWORD")),
            Account(SHOPPER_EMAIL, password("DEMO_SHOPPER_PASSWORD")))
