"""Tracking follows order events: in order, once, whatever the delivery does."""

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import aiohttp
import asyncpg

from services.tracking.domain import StatusFollowed
from services.tracking.queries import follow_statuses
from shopkit.consumer import REASON_HEADER, RETRIES_HEADER
from shopkit.dlq import dead_letter_counts
from tests.events import publish_event, take_dead_letters, watch_events
from tests.harness import (
    RABBITMQ_URL,
    call,
    eventually,
    new_customer,
    place_order,
    queue_settled,
    running_system,
)

QUEUE = "tracking.orders"


async def _tracking_when(client, token: str, order_id: str, done) -> dict:  # type: ignore[no-untyped-def]
    async def check() -> dict | None:
        status, body = await call(client, "GET", f"/api/orders/{order_id}/tracking", token)
        return body["data"] if status == 200 and done(body["data"]) else None

    return await eventually(check)


async def test_tracking_appears_and_follows_every_status_change_in_order(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    tracking = await _tracking_when(client, user_token, order["id"], lambda t: True)
    assert tracking["status"] == "placed" and tracking["orderId"] == order["id"]
    assert set(tracking) == {"orderId", "status", "carrier", "trackingNumber",
                             "estimatedDelivery", "timeline"}
    assert [(e["status"], e["note"]) for e in tracking["timeline"]] == [("placed", "Order placed")]

    path = f"/api/admin/orders/{order['id']}/status"
    steps = [("confirmed", None), ("shipped", "Parcel handed over"), ("out_for_delivery", None),
             ("delivered", "Left with neighbour")]
    for target, note in steps:
        assert (await call(client, "POST", path, admin_token,
                           {"status": target, "note": note}))[0] == 200
    tracking = await _tracking_when(
        client, user_token, order["id"], lambda t: t["status"] == "delivered"
    )
    assert [(e["status"], e["note"]) for e in tracking["timeline"]] == [
        ("placed", "Order placed"), *steps
    ]
    times = [e["occurredAt"] for e in tracking["timeline"]]
    assert times == sorted(times)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_change_of_delivery_tells_the_world_what_the_delivery_now_is(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    await _tracking_when(client, user_token, order["id"], lambda t: True)
    path = f"/api/admin/orders/{order['id']}/tracking"
    async with watch_events("tracking.*") as events:
        status, body = await call(client, "POST", path, admin_token, {
            "carrier": "DHL", "estimatedDelivery": "2026-12-24",
            "checkpoint": {"location": "Leipzig hub", "note": "Sorted"},
        })
        assert status == 200, body
        status, _ = await call(client, "POST", path, admin_token, {"trackingNumber": "JD0142"})
        assert status == 200
        bodies = await events.bodies_until(
            lambda bodies: len([b for b in bodies if b["data"]["orderId"] == order["id"]]) >= 2
        )
    with_checkpoint, without = [b for b in bodies if b["data"]["orderId"] == order["id"]]
    checkpoint_at = _time(body["data"]["timeline"][-1]["occurredAt"])
    assert (with_checkpoint["type"], with_checkpoint["source"]) == ("tracking.updated", "tracking")
    checkpoint = with_checkpoint["data"]["checkpoint"]
    assert _time(checkpoint.pop("occurredAt")) == checkpoint_at
    assert _time(with_checkpoint["occurredAt"]) == checkpoint_at
    assert with_checkpoint["data"] == {
        "orderId": order["id"], "userId": order["userId"], "status": "placed", "carrier": "DHL",
        "trackingNumber": None, "estimatedDelivery": "2026-12-24",
        "checkpoint": {"location": "Leipzig hub", "note": "Sorted"},
    }
    assert without["data"] == with_checkpoint["data"] | {
        "trackingNumber": "JD0142", "checkpoint": None
    }


async def test_a_checkpoint_shows_in_the_timeline(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    order = await place_order(client, user_token, admin_token)
    await _tracking_when(client, user_token, order["id"], lambda t: True)
    status, body = await call(
        client, "POST", f"/api/admin/orders/{order['id']}/tracking", admin_token,
        {"carrier": "DHL", "trackingNumber": "JD0142", "estimatedDelivery": "2026-12-24",
         "checkpoint": {"location": "Leipzig hub", "note": "Sorted"}},
    )
    assert status == 200, body
    tracking = body["data"]
    assert (tracking["carrier"], tracking["trackingNumber"], tracking["estimatedDelivery"]) == (
        "DHL", "JD0142", "2026-12-24"
    )
    assert tracking["timeline"][-1] | {"occurredAt": None} == {
        "status": "placed", "note": "Sorted", "location": "Leipzig hub", "occurredAt": None
    }
    status, body = await call(
        client, "POST", f"/api/admin/orders/{order['id']}/tracking", admin_token,
        {"carrier": "UPS"},
    )
    assert body["data"]["carrier"] == "UPS" and body["data"]["trackingNumber"] == "JD0142"
    status, body = await call(
        client, "POST", f"/api/admin/orders/{order['id']}/tracking", admin_token, {}
    )
    assert status == 422
    for date in (0, 1700000000, "24.12.2026"):  # only the text YYYY-MM-DD is a date
        status, body = await call(
            client, "POST", f"/api/admin/orders/{order['id']}/tracking", admin_token,
            {"estimatedDelivery": date},
        )
        assert status == 422 and body["details"][0]["field"] == "estimatedDelivery", date


async def test_tracking_is_the_owners_and_admins_only(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    owner, _ = await new_customer(client)
    order = await place_order(client, owner, admin_token)
    await _tracking_when(client, owner, order["id"], lambda t: True)
    path = f"/api/orders/{order['id']}/tracking"
    status, body = await call(client, "GET", path, user_token)
    assert status == 404 and body["code"] == "not_found"
    assert (await call(client, "GET", path, admin_token))[0] == 200
    assert (await call(client, "GET", f"/api/orders/{uuid.uuid4()}/tracking", owner))[0] == 404
    admin_path = f"/api/admin/orders/{order['id']}/tracking"
    assert (await call(client, "POST", admin_path, owner, {"carrier": "X"}))[0] == 403
    unknown = f"/api/admin/orders/{uuid.uuid4()}/tracking"
    assert (await call(client, "POST", unknown, admin_token, {"carrier": "X"}))[0] == 404


def _order_events(order_id: uuid.UUID, user_id: uuid.UUID) -> list[tuple[str, dict, datetime]]:
    start = datetime.now(UTC)
    steps = [("placed", 1), ("confirmed", 2), ("shipped", 3), ("in_transit", 4)]
    events = [("order.created", {"orderId": str(order_id), "userId": str(user_id),
                                 "status": "placed", "totalCents": 100, "items": [],
                                 "version": 1}, start)]
    for n, (status, version) in enumerate(steps[1:], start=1):
        events.append(("order.status_changed", {
            "orderId": str(order_id), "userId": str(user_id), "from": steps[n - 1][0],
            "to": status, "note": f"step {version}", "version": version,
        }, start + timedelta(seconds=n)))
    return events


async def _tracking_row(admin_db: asyncpg.Pool, order_id: uuid.UUID) -> tuple | None:
    row = await admin_db.fetchrow(
        "SELECT status, version FROM tracking.trackings WHERE order_id = $1", order_id
    )
    entries = await admin_db.fetch(
        "SELECT status FROM tracking.timeline WHERE order_id = $1 ORDER BY occurred_at, id",
        order_id,
    )
    return (row["status"], row["version"], [e["status"] for e in entries]) if row else None


async def test_events_out_of_order_and_twice_end_in_the_right_state(
    system, admin_db: asyncpg.Pool
) -> None:
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    events = _order_events(order_id, user_id)
    ids = [uuid.uuid4() for _ in events]
    # Newest first, then everything again: duplicates and stale versions must change nothing.
    for (event_type, data, at), event_id in reversed(list(zip(events, ids, strict=True))):
        await publish_event(event_type, data, event_id=event_id, occurred_at=at)
    for (event_type, data, at), event_id in zip(events, ids, strict=True):
        await publish_event(event_type, data, event_id=event_id, occurred_at=at)

    expected = ("in_transit", 4, ["placed", "confirmed", "shipped", "in_transit"])

    async def settled() -> bool:
        return await _tracking_row(admin_db, order_id) == expected

    await eventually(settled)
    # Once the queue holds nothing, waiting or unacknowledged, the second copies have been
    # processed too, and the state has not moved.
    await eventually(lambda: queue_settled(QUEUE))
    assert await _tracking_row(admin_db, order_id) == expected


async def test_one_batch_with_every_version_of_orders_twice_ends_in_the_right_state(
    system, admin_db: asyncpg.Pool
) -> None:
    """What the consumer hands follow_statuses under load: several events of one order, out of
    order and repeated, beside other orders' events, in one statement."""
    orders = [(uuid.uuid4(), uuid.uuid4()) for _ in range(3)]
    statuses = [
        StatusFollowed(
            uuid.UUID(data["orderId"]), uuid.UUID(data["userId"]), data["version"],
            data.get("to") or data["status"], data.get("note"), at,
        )
        for order_id, user_id in orders
        for _, data, at in _order_events(order_id, user_id)
    ]
    batch = list(reversed(statuses)) + statuses[:3]
    conn = await asyncpg.connect(system.settings["tracking"].database_url.get_secret_value(),
                                 server_settings={"search_path": "tracking"})
    try:
        await follow_statuses(conn, batch)
    finally:
        await conn.close()
    expected = ("in_transit", 4, ["placed", "confirmed", "shipped", "in_transit"])
    for order_id, _ in orders:
        assert await _tracking_row(admin_db, order_id) == expected


async def _dead_letters() -> list[aio_pika.abc.AbstractIncomingMessage]:
    return await take_dead_letters(QUEUE)


async def test_poison_goes_to_the_dlq_and_good_messages_still_flow(
    system, admin_db: asyncpg.Pool
) -> None:
    await _dead_letters()
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    poison = [
        ("order.created", None, b"{not json"),
        ("order.created", None, b'{"id": "x", "type": "order.created"}'),
        ("order.status_changed", {"orderId": "nope"}, None),
    ]
    for event_type, data, raw in poison:
        await publish_event(event_type, data or {}, raw_body=raw)
    # A valid envelope of a type tracking does not handle, on a key it listens to.
    await publish_event("order.exploded", {}, routing_key="order.created")
    created = _order_events(order_id, user_id)[0]
    await publish_event(created[0], created[1])

    await eventually(lambda: _tracking_row(admin_db, order_id))

    async def four_dead() -> list:
        return await _dead_letters_count() >= 4 and await _dead_letters()

    dead = await eventually(four_dead)
    reasons = [m.headers[REASON_HEADER] for m in dead]
    assert len(dead) == 4, reasons
    assert len([r for r in reasons if "not an event envelope" in r]) == 2
    assert any("bad order.status_changed data" in r for r in reasons)
    assert any("unknown event type 'order.exploded'" in r for r in reasons)


async def test_an_event_from_a_component_that_does_not_own_its_type_is_dead_lettered(
    system, admin_db: asyncpg.Pool
) -> None:
    """Only orders may tell of orders: an order event that says it comes from tracking (or
    from nobody in particular) is not believed, whoever managed to publish it."""
    await _dead_letters()
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    created = _order_events(order_id, user_id)[0]
    for source in ("tracking", "auth", "test"):
        await publish_event(created[0], created[1], source=source)

    async def three_dead() -> list:
        return await _dead_letters_count() >= 3 and await _dead_letters()

    dead = await eventually(three_dead)
    assert all("which does not own it" in m.headers[REASON_HEADER] for m in dead)
    assert await _tracking_row(admin_db, order_id) is None
    await publish_event(created[0], created[1])  # from orders: believed
    await eventually(lambda: _tracking_row(admin_db, order_id))


async def test_an_event_under_another_types_routing_key_is_dead_lettered(
    system, admin_db: asyncpg.Pool
) -> None:
    """RabbitMQ lets auth publish under `auth.*` keys only, but checks the key, not the body:
    an order event published under an auth key (which tracking does not even bind: here
    under order.status_changed's key, as a component allowed that key but not this type
    would) is not believed."""
    await _dead_letters()
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    created = _order_events(order_id, user_id)[0]
    await publish_event(created[0], created[1], routing_key="order.status_changed")
    dead = await eventually(_dead_letters)
    assert "under 'order.status_changed'" in dead[0].headers[REASON_HEADER]
    assert await _tracking_row(admin_db, order_id) is None


async def _dead_letters_count() -> int:
    return (await dead_letter_counts(RABBITMQ_URL, [QUEUE]))[f"{QUEUE}.dlq"]


async def test_a_failing_event_is_retried_with_backoff_then_dead_lettered(
    system, admin_db: asyncpg.Pool
) -> None:
    await _dead_letters()
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    # Valid as an event, but Postgres refuses a NUL in text: a failure on every attempt.
    await publish_event("order.status_changed", {
        "orderId": str(order_id), "userId": str(user_id), "from": "placed", "to": "shipped",
        "note": "bad\x00note", "version": 2,
    })
    settings = system.settings["tracking"]
    dead = await eventually(_dead_letters, deadline_seconds=30)
    assert len(dead) == 1
    assert dead[0].headers[RETRIES_HEADER] == settings.consumer_max_retries
    assert f"failed {settings.consumer_max_retries + 1} times" in dead[0].headers[REASON_HEADER]
    assert await _tracking_row(admin_db, order_id) is None, "the failed attempts left nothing"


async def test_the_dlq_command_counts_and_requeues(system, admin_db: asyncpg.Pool) -> None:
    await _dead_letters()
    for _ in range(2):
        await publish_event("order.created", {}, raw_body=b"[]")
    await eventually(lambda: _count_is(2))

    code, output = await _dlq_command()
    assert code == 0 and f"{QUEUE}.dlq: 2" in output
    code, output = await _dlq_command("requeue")
    assert code == 0 and "2 moved back" in output
    # Still poison: back they come, after one more trip through the queue.
    await eventually(lambda: _count_is(2))
    await _dead_letters()


async def _count_is(n: int) -> bool:
    return await _dead_letters_count() == n


async def _dlq_command(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.tracking", "dlq", *args,
        env={"RABBITMQ_URL": RABBITMQ_URL, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_two_instances_share_the_queue_and_give_the_same_results(
    databases, system, admin_db: asyncpg.Pool
) -> None:
    orders = [(uuid.uuid4(), uuid.uuid4()) for _ in range(10)]
    async with running_system(databases):
        for order_id, user_id in orders:
            for event_type, data, at in _order_events(order_id, user_id):
                await publish_event(event_type, data, occurred_at=at)
        expected = ("in_transit", 4, ["placed", "confirmed", "shipped", "in_transit"])

        async def all_complete() -> bool:
            rows = [await _tracking_row(admin_db, order_id) for order_id, _ in orders]
            return all(row == expected for row in rows)

        await eventually(all_complete, deadline_seconds=30)
