"""Order events on `shop.events`: committed with the change, published whatever happens."""

from datetime import datetime

import aiohttp
import asyncpg
import orjson

from tests.events import watch_events
from tests.harness import (
    System,
    call,
    create_address,
    create_product,
    eventually,
    place_order,
    rabbitmq_stopped,
    running_system,
    wait_until_ready,
)


def _of_order(order_id: str, count: int):  # type: ignore[no-untyped-def]
    return lambda bodies: len([b for b in bodies if b["data"]["orderId"] == order_id]) >= count


async def test_order_events_carry_the_envelope_and_consecutive_versions(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    await wait_until_ready(client)
    async with watch_events("order.*") as events:
        order = await place_order(client, user_token, admin_token, quantity=2)
        path = f"/api/admin/orders/{order['id']}/status"
        for target in ("confirmed", "shipped", "delivered"):
            status, _ = await call(client, "POST", path, admin_token,
                                   {"status": target, "note": f"now {target}"},
                                   **{"X-Request-Id": f"req-{target}"})
            assert status == 200

        created_message = await events.next()
        created = orjson.loads(created_message.body)
        assert created_message.type == "order.created" == created["type"]
        assert created_message.message_id == created["id"]
        assert created_message.content_type == "application/json"
        assert created_message.headers["x-request-id"].startswith("place-")
        assert created["data"] == {
            "orderId": order["id"], "userId": order["userId"], "status": "placed",
            "totalCents": order["totalCents"], "items": order["items"], "version": 1,
        }
        assert created["occurredAt"].endswith("+00:00")
        placed_at = datetime.fromisoformat(order["createdAt"].replace("Z", "+00:00"))
        assert datetime.fromisoformat(created["occurredAt"]) == placed_at
        bodies = await events.bodies_until(_of_order(order["id"], 3))
    mine = [b for b in bodies if b["data"]["orderId"] == order["id"]]
    assert [b["type"] for b in mine] == ["order.status_changed"] * 3
    assert [b["data"]["version"] for b in mine] == [2, 3, 4]
    assert [(b["data"]["from"], b["data"]["to"]) for b in mine] == [
        ("placed", "confirmed"), ("confirmed", "shipped"), ("shipped", "delivered"),
    ]
    assert mine[0]["data"] == {
        "orderId": order["id"], "userId": order["userId"], "from": "placed", "to": "confirmed",
        "note": "now confirmed", "version": 2,
    }
    assert all(b["source"] == "orders" and b["occurredAt"] and b["id"] for b in mine)


async def test_orders_are_taken_while_rabbitmq_is_down_and_their_events_follow(
    system: System, client: aiohttp.ClientSession, user_token: str, admin_token: str,
    admin_db: asyncpg.Pool,
) -> None:
    await wait_until_ready(client)
    # A durable queue outlives the broker's restart, so events published after it land here.
    async with watch_events("order.*", durable=True) as events:
        address = await create_address(client, user_token)
        product = await create_product(client, admin_token, stock=10)
        async with rabbitmq_stopped(system):
            status, body = await call(
                client, "POST", "/api/orders", user_token,
                {"addressId": address["id"], "items": [{"productId": product["id"],
                                                         "quantity": 1}]},
            )
            assert status == 201, body
            order_id = body["data"]["id"]
            status, _ = await call(client, "POST", f"/api/admin/orders/{order_id}/status",
                                   admin_token, {"status": "confirmed"})
            assert status == 200
            pending = await admin_db.fetchval(
                "SELECT count(*) FROM orders.outbox WHERE aggregate_id = $1 "
                "AND published_at IS NULL", order_id,
            )
            assert pending == 2
        bodies = await events.bodies_until(_of_order(order_id, 2), deadline_seconds=60)
    mine = [b for b in bodies if b["data"]["orderId"] == order_id]
    assert [(b["type"], b["data"]["version"]) for b in mine] == [
        ("order.created", 1), ("order.status_changed", 2),
    ]

    # The consumers reconnected on their own: tracking caught up with both events.
    async def tracking_caught_up() -> bool:
        status, body = await call(client, "GET", f"/api/orders/{order_id}/tracking", user_token)
        return status == 200 and body["data"]["status"] == "confirmed"

    await eventually(tracking_caught_up, deadline_seconds=30)


async def test_rows_an_instance_could_not_publish_are_published_by_another(
    databases, system: System, client: aiohttp.ClientSession, user_token: str,
    admin_token: str, admin_db: asyncpg.Pool,
) -> None:
    """An orders instance that commits orders but cannot publish (its broker is unreachable),
    then goes away: the rows it left are published by the instance still running. (A relay
    dying between the broker's confirm and its own commit: see test_outbox.)"""
    await wait_until_ready(client)
    async with watch_events("order.created") as events:
        address = await create_address(client, user_token)
        product = await create_product(client, admin_token, stock=10)
        unreachable = {"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/"}
        async with running_system(databases, orders=unreachable) as doomed, \
                aiohttp.ClientSession(base_url=doomed.gateway_url) as doomed_client:
            status, body = await call(
                doomed_client, "POST", "/api/orders", user_token,
                {"addressId": address["id"], "items": [{"productId": product["id"],
                                                         "quantity": 1}]},
            )
            assert status == 201
            order_id = body["data"]["id"]
        # The doomed instance is gone; the shared system's relay picks its row up.
        bodies = await events.bodies_until(_of_order(order_id, 1))
    assert [b["data"]["version"] for b in bodies if b["data"]["orderId"] == order_id] == [1]
    published = await admin_db.fetchval(
        "SELECT published_at IS NOT NULL FROM orders.outbox WHERE aggregate_id = $1", order_id
    )
    assert published
