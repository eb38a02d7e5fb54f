"""Contract §4 Notifications, the stream under pressure: a reconnect misses nothing
(Last-Event-ID), a user holds at most MAX_STREAMS_PER_USER streams on every instance together,
an instance serves at most its ceiling, streams never take the connections requests need, and a
stream ends when its session does."""

import asyncio
import contextlib
import time
import uuid

import aiohttp
import asyncpg
import orjson

from services.notifications.app import renew_leases
from services.notifications.routes import HUB_KEY
from tests.harness import (
    System,
    call,
    event_stream,
    eventually,
    new_customer,
    next_sse_event,
    place_order,
    running_system,
    session_changed,
    stream_attempt,
    stream_ends,
)


async def _move(client: aiohttp.ClientSession, admin_token: str, order_id: str, to: str) -> None:
    status, body = await call(client, "POST", f"/api/admin/orders/{order_id}/status",
                              admin_token, {"status": to})
    assert status == 200, body


async def _next_notification(response: aiohttp.ClientResponse) -> dict:
    async with asyncio.timeout(15):
        event = await next_sse_event(response)
    assert event["event"] == "notification"
    pushed = orjson.loads(event["data"])
    assert event["id"] == pushed["id"]
    return pushed


async def test_a_reconnect_with_last_event_id_misses_nothing(
    system: System, client: aiohttp.ClientSession, admin_token: str
) -> None:
    token, _ = await new_customer(client)
    order = await place_order(client, token, admin_token)
    async with event_stream(system.gateway_url, token) as response:
        await _move(client, admin_token, order["id"], "confirmed")
        first = await _next_notification(response)

    # While no stream is open: two more.
    await _move(client, admin_token, order["id"], "shipped")
    await _move(client, admin_token, order["id"], "in_transit")

    async def both_written() -> bool:
        _, body = await call(client, "GET", "/api/notifications", token)
        return len(body["data"]["items"]) == 3

    await eventually(both_written)
    async with event_stream(system.gateway_url, token, last_event_id=first["id"]) as response:
        missed = [await _next_notification(response) for _ in range(2)]
        await _move(client, admin_token, order["id"], "delivered")
        live = await _next_notification(response)
    assert [n["title"] for n in missed] == ["Your order has shipped", "Your order is on its way"]
    assert live["title"] == "Your order was delivered"
    listed = (await call(client, "GET", "/api/notifications", token))[1]["data"]["items"]
    assert [n["id"] for n in reversed(listed)] == [first["id"], *(n["id"] for n in missed),
                                                    live["id"]], "each once, in order"


async def test_someone_elses_or_an_unknown_last_event_id_resumes_nothing(
    system: System, client: aiohttp.ClientSession, admin_token: str
) -> None:
    other, _ = await new_customer(client)
    theirs = await place_order(client, other, admin_token)
    await _move(client, admin_token, theirs["id"], "confirmed")

    async def notified() -> str | None:
        _, body = await call(client, "GET", "/api/notifications", other)
        return body["data"]["items"][0]["id"] if body["data"]["items"] else None

    their_notification = await eventually(notified)
    token, _ = await new_customer(client)
    mine = await place_order(client, token, admin_token)
    for anchor in (their_notification, str(uuid.uuid4())):
        async with event_stream(system.gateway_url, token, last_event_id=anchor) as response:
            await _move(client, admin_token, mine["id"], "confirmed"
                        if anchor == their_notification else "shipped")
            pushed = await _next_notification(response)
            assert pushed["orderId"] == mine["id"], "only live ones of one's own"
    async with stream_attempt(system.gateway_url, token, last_event_id="nonsense") as response:
        assert response.status == 422
        assert (await response.json())["details"][0]["field"] == "Last-Event-ID"


async def test_a_user_holds_at_most_so_many_streams_on_every_instance_together(
    databases, system: System, client: aiohttp.ClientSession
) -> None:
    token, _ = await new_customer(client)
    limit = system.settings["notifications"].max_streams_per_user
    async with running_system(databases) as second, contextlib.AsyncExitStack() as streams:
        for n in range(limit):  # spread over two instances, each behind its own gateway
            gateway = system.gateway_url if n % 2 else second.gateway_url
            await streams.enter_async_context(event_stream(gateway, token))
        for gateway in (system.gateway_url, second.gateway_url):
            async with stream_attempt(gateway, token) as refused:
                body = await refused.json()
                assert refused.status == 429 and body["code"] == "too_many_streams", body
                assert int(refused.headers["Retry-After"]) >= 1
        other, _ = await new_customer(client)
        async with event_stream(system.gateway_url, other):
            pass  # the cap is per user
    # The streams are closed: they no longer count.
    async with event_stream(system.gateway_url, token):
        pass


async def test_an_instance_serves_at_most_its_ceiling(
    databases, client: aiohttp.ClientSession
) -> None:
    async with running_system(
        databases, notifications={"max_streams_per_instance": 2}
    ) as own, contextlib.AsyncExitStack() as streams:
        for _ in range(2):
            token, _ = await new_customer(client)
            await streams.enter_async_context(event_stream(own.gateway_url, token))
        token, _ = await new_customer(client)
        async with stream_attempt(own.gateway_url, token) as refused:
            assert refused.status == 503 and refused.headers["Retry-After"]


async def test_streams_never_take_the_connections_requests_need(
    databases, client: aiohttp.ClientSession
) -> None:
    """The gateway has 2 connections for requests and room for 3 streams: 3 streams open,
    a 4th is refused at once, and requests are served all the while."""
    async with running_system(
        databases, gateway={"upstream_connections": 2, "max_streams": 3}
    ) as own, contextlib.AsyncExitStack() as streams, aiohttp.ClientSession(
        base_url=own.gateway_url
    ) as own_client:
        tokens = [(await new_customer(client))[0] for _ in range(4)]
        for token in tokens[:3]:
            await streams.enter_async_context(event_stream(own.gateway_url, token))
        async with stream_attempt(own.gateway_url, tokens[3]) as refused:
            assert refused.status == 503 and refused.headers["Retry-After"]
        started = time.monotonic()
        answers = await asyncio.gather(
            *(call(own_client, "GET", "/api/notifications", tokens[3]) for _ in range(20))
        )
        assert {status for status, _ in answers} == {200}
        assert time.monotonic() - started < 10


async def test_a_stream_ends_when_its_session_ends(
    system: System, client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    token = await session_changed(client, admin_db, "expires_at = now() + interval '2 seconds'")
    async with event_stream(system.gateway_url, token) as response:
        await stream_ends(response, deadline_seconds=10)
    assert (await call(client, "GET", "/api/users/me", token))[0] == 401


async def test_a_stream_does_not_open_on_a_session_revoked_on_its_way(
    system: System, client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    """A revocation that reached notifications after the gateway checked the token, but
    before the stream could hear of it, still keeps the stream from opening."""
    token, _ = await new_customer(client)
    _, sessions = await call(client, "GET", "/api/users/sessions", token)
    session_id = sessions["data"]["items"][0]["id"]
    _, me = await call(client, "GET", "/api/users/me", token)
    await admin_db.execute(  # as notifications record an auth.session_revoked
        "INSERT INTO notifications.revoked_sessions (event_id, session_id, user_id)"
        " VALUES ($1, $2, $3)", uuid.uuid4(), uuid.UUID(session_id), uuid.UUID(me["data"]["id"]),
    )
    async with stream_attempt(system.gateway_url, token) as refused:
        assert refused.status == 401


async def test_streams_that_ended_unrecorded_stop_counting(
    system: System, client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    """A stream whose end could not be written (the database was away) is forgotten at the
    next renewal of its instance's leases, instead of counting against its user for good."""
    app = system.apps["notifications"]
    hub = app[HUB_KEY]
    token, _ = await new_customer(client)
    _, me = await call(client, "GET", "/api/users/me", token)
    ghost = uuid.uuid4()
    await admin_db.execute(
        "INSERT INTO notifications.open_streams (id, user_id, instance_id, lease_ends_at)"
        " VALUES ($1, $2, $3, now() + interval '1 hour')",
        ghost, uuid.UUID(me["data"]["id"]), hub.instance_id,
    )
    async with event_stream(system.gateway_url, token):
        await renew_leases(app)
        rows = await admin_db.fetch(
            "SELECT id FROM notifications.open_streams WHERE user_id = $1",
            uuid.UUID(me["data"]["id"]),
        )
        open_now = set(hub.stream_ids)
    assert len(rows) == 1 and rows[0]["id"] in open_now, "the ghost is gone, the stream stays"
