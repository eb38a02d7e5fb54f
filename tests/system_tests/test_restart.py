"""Every component stopped (SIGTERM) and started again: nothing lived in process memory."""

from typing import Any

import aiohttp
import pytest

from tests.harness import call, create_address, create_product, eventually, new_customer
from tests.processes import LaunchedSystem

pytestmark = pytest.mark.system


async def _view(client: aiohttp.ClientSession, token: str, admin: str, ids: dict) -> dict:
    """What the customer and the admin see of everything the test made."""
    paths = {
        "me": ("/api/users/me", token),
        "addresses": ("/api/addresses", token),
        "product": (f"/api/products/{ids['product']}", None),
        "order": (f"/api/orders/{ids['order']}", token),
        "tracking": (f"/api/orders/{ids['order']}/tracking", token),
        "notifications": ("/api/notifications", token),
        "order as admin": (f"/api/orders/{ids['order']}", admin),
    }
    view: dict[str, Any] = {}
    for name, (path, caller) in paths.items():
        status, body = await call(client, "GET", path, caller)
        assert status == 200, (name, body)
        view[name] = body["data"]
    return view


async def _settled(client: aiohttp.ClientSession, token: str, order_id: str, version: int) -> bool:
    """Tracking and notifications have caught up with the order's version."""
    status, tracking = await call(client, "GET", f"/api/orders/{order_id}/tracking", token)
    _, notifications = await call(client, "GET", "/api/notifications", token)
    return (
        status == 200 and len(tracking["data"]["timeline"]) == version
        and len(notifications["data"]["items"]) == version - 1
    )


async def test_sessions_orders_addresses_stock_and_tracking_survive_a_restart_of_everything(
    launched: LaunchedSystem, launched_admin: str
) -> None:
    async with aiohttp.ClientSession(base_url=launched.gateway_url) as client:
        token, home_id = await new_customer(client)
        await create_address(client, token, label="Work", isDefault=True)
        product = await create_product(client, launched_admin, stock=7)
        status, body = await call(client, "POST", "/api/orders", token, {
            "addressId": home_id, "items": [{"productId": product["id"], "quantity": 2}],
        })
        assert status == 201, body
        order_id = body["data"]["id"]
        status, body = await call(client, "POST", f"/api/admin/orders/{order_id}/status",
                                  launched_admin, {"status": "confirmed"})
        assert status == 200, body
        await eventually(lambda: _settled(client, token, order_id, version=2))
        ids = {"product": product["id"], "order": order_id}
        before = await _view(client, token, launched_admin, ids)

    codes = await launched.restart()

    assert codes == dict.fromkeys(launched.processes.processes, 0), codes
    async with aiohttp.ClientSession(base_url=launched.gateway_url) as client:
        assert await _view(client, token, launched_admin, ids) == before
        assert before["product"]["stock"] == 5
        # The restarted consumers and relays carry on where the old processes stopped.
        status, body = await call(client, "POST", f"/api/admin/orders/{order_id}/status",
                                  launched_admin, {"status": "shipped"})
        assert status == 200, body
        await eventually(lambda: _settled(client, token, order_id, version=3))

