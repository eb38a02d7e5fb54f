"""Notifications: one per status change and per checkpoint, listed, read, and streamed (SSE)."""

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson

from tests.events import publish_event
from tests.harness import (
    call,
    event_stream,
    eventually,
    new_customer,
    next_sse_event,
    place_order,
    queue_settled,
    running_system,
)


async def _notifications(
    client: aiohttp.ClientSession, token: str, count: int, query: str = ""
) -> dict[str, Any]:
    async def check() -> dict | None:
        status, body = await call(client, "GET", f"/api/notifications{query}", token)
        assert status == 200, body
        return body["data"] if len(body["data"]["items"]) >= count else None

    return await eventually(check)


async def test_status_changes_and_checkpoints_notify_the_customer_once(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    path = f"/api/admin/orders/{order['id']}/status"
    # Each change waits for the one before to be notified: events are consumed in parallel,
    # and the list is in the order the notifications were made.
    assert (await call(client, "POST", path, admin_token, {"status": "confirmed"}))[0] == 200
    await _notifications(client, user_token, 1)
    assert (await call(client, "POST", path, admin_token,
                       {"status": "shipped", "note": "Two parcels."}))[0] == 200
    await _notifications(client, user_token, 2)

    async def tracked() -> bool:
        status, _ = await call(client, "GET", f"/api/orders/{order['id']}/tracking", user_token)
        return status == 200

    await eventually(tracked)
    status, _ = await call(
        client, "POST", f"/api/admin/orders/{order['id']}/tracking", admin_token,
        {"checkpoint": {"location": "Leipzig hub", "note": "Sorted for delivery."}},
    )
    assert status == 200
    await _notifications(client, user_token, 3)
    await eventually(lambda: queue_settled("notifications.events"))
    data = (await call(client, "GET", "/api/notifications", user_token))[1]["data"]
    items = data["items"]
    assert len(items) == 3, "one per change and per checkpoint, none twice"
    assert [n["title"] for n in items] == [
        "Delivery update: Leipzig hub", "Your order has shipped", "Your order is confirmed",
    ]
    assert [n["type"] for n in items] == ["delivery_update", "order_status", "order_status"]
    assert "Two parcels." in items[1]["body"] and "Sorted for delivery." in items[0]["body"]
    assert all(n["orderId"] == order["id"] and n["readAt"] is None for n in items)
    assert set(items[0]) == {"id", "type", "title", "body", "orderId", "createdAt", "readAt"}
    assert data["unreadCount"] == 3 and data["nextCursor"] is None


async def test_the_same_event_twice_makes_one_notification(
    system, admin_db: asyncpg.Pool
) -> None:
    user_id, order_id, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = {"orderId": str(order_id), "userId": str(user_id), "from": "placed",
            "to": "confirmed", "note": None, "version": 2}
    for _ in range(3):
        await publish_event("order.status_changed", data, event_id=event_id)

    async def made() -> int:
        return await admin_db.fetchval(
            "SELECT count(*) FROM notifications.notifications WHERE user_id = $1", user_id
        )

    await eventually(made)
    # Once the queue holds nothing, waiting or unacknowledged, all three copies were handled.
    await eventually(lambda: queue_settled("notifications.events"))
    assert await made() == 1


async def test_reading_listing_and_paging(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    path = f"/api/admin/orders/{order['id']}/status"
    for target in ("confirmed", "shipped", "in_transit"):
        assert (await call(client, "POST", path, admin_token, {"status": target}))[0] == 200
    items = (await _notifications(client, user_token, 3))["items"]

    status, body = await call(client, "POST", f"/api/notifications/{items[1]['id']}/read",
                              user_token)
    assert status == 200 and body["data"]["readAt"] is not None
    first_read = body["data"]["readAt"]
    status, body = await call(client, "POST", f"/api/notifications/{items[1]['id']}/read",
                              user_token)
    assert body["data"]["readAt"] == first_read, "reading again keeps the first read time"

    status, body = await call(client, "GET", "/api/notifications?unread=true", user_token)
    assert [n["id"] for n in body["data"]["items"]] == [items[0]["id"], items[2]["id"]]
    assert body["data"]["unreadCount"] == 2
    status, body = await call(client, "GET", "/api/notifications?limit=2", user_token)
    assert len(body["data"]["items"]) == 2 and body["data"]["nextCursor"]
    cursor = body["data"]["nextCursor"]
    status, body = await call(client, "GET", f"/api/notifications?limit=2&cursor={cursor}",
                              user_token)
    assert [n["id"] for n in body["data"]["items"]] == [items[2]["id"]]
    assert (await call(client, "GET", "/api/notifications?unread=maybe", user_token))[0] == 422

    status, body = await call(client, "POST", "/api/notifications/read-all", user_token)
    assert status == 200 and body["data"] == {"updated": 2}
    status, body = await call(client, "GET", "/api/notifications?unread=true", user_token)
    assert body["data"]["items"] == [] and body["data"]["unreadCount"] == 0


async def test_another_users_notifications_are_404_and_invisible(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    owner, _ = await new_customer(client)
    order = await place_order(client, owner, admin_token)
    path = f"/api/admin/orders/{order['id']}/status"
    assert (await call(client, "POST", path, admin_token, {"status": "confirmed"}))[0] == 200
    theirs = (await _notifications(client, owner, 1))["items"][0]

    status, body = await call(client, "POST", f"/api/notifications/{theirs['id']}/read",
                              user_token)
    assert status == 404 and body["code"] == "not_found"
    status, body = await call(client, "GET", "/api/notifications", user_token)
    assert theirs["id"] not in [n["id"] for n in body["data"]["items"]]
    status, body = await call(client, "GET", "/api/notifications?unread=true", owner)
    assert [n["id"] for n in body["data"]["items"]] == [theirs["id"]]
    assert (await call(client, "POST", "/api/notifications/not-a-uuid/read", owner))[0] == 404


async def test_the_stream_pushes_new_notifications_through_the_gateway(
    system, client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    async with event_stream(system.gateway_url, user_token) as response:
        status, _ = await call(client, "POST", f"/api/admin/orders/{order['id']}/status",
                               admin_token, {"status": "confirmed"})
        assert status == 200
        async with asyncio.timeout(15):
            event = await next_sse_event(response)
    assert event["event"] == "notification"
    pushed = orjson.loads(event["data"])
    assert pushed["title"] == "Your order is confirmed" and pushed["orderId"] == order["id"]
    assert event["id"] == pushed["id"]
    listed = (await call(client, "GET", "/api/notifications", user_token))[1]["data"]["items"]
    assert listed == [pushed], "the stream and the list show one notification alike"


async def test_every_instance_streams_what_any_instance_wrote(
    databases, system, client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    """A stream held by a second notifications instance gets a notification written by
    whichever instance consumed the event, and the notifications are made once."""
    order = await place_order(client, user_token, admin_token)
    async with running_system(databases) as second, event_stream(second.gateway_url,
                                                            user_token) as response:
        path = f"/api/admin/orders/{order['id']}/status"
        for target in ("confirmed", "shipped", "in_transit", "delivered"):
            assert (await call(client, "POST", path, admin_token, {"status": target}))[0] == 200
        async with asyncio.timeout(15):
            pushed = [orjson.loads((await next_sse_event(response))["data"]) for _ in range(4)]
    assert sorted(p["title"] for p in pushed) == sorted([
        "Your order is confirmed", "Your order has shipped", "Your order is on its way",
        "Your order was delivered",
    ])
    listed = (await _notifications(client, user_token, 4))["items"]
    assert len([n for n in listed if n["orderId"] == order["id"]]) == 4


async def test_idle_streams_get_keep_alive_pings(databases, user_token: str) -> None:
    async with running_system(
        databases, notifications={"sse_ping_interval_seconds": 0.1}
    ) as own, event_stream(own.gateway_url, user_token) as response:
        async with asyncio.timeout(10):
            while not (await response.content.readline()).startswith(b":"):
                pass


async def test_a_stream_ends_when_its_session_is_revoked(
    system, client: aiohttp.ClientSession
) -> None:
    token, _ = await new_customer(client)
    async with event_stream(system.gateway_url, token) as response:
        assert (await call(client, "POST", "/api/users/logout", token))[0] == 200
        async with asyncio.timeout(15):
            while await response.content.readline():
                pass  # pings, if any, until the stream ends
