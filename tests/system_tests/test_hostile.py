"""The attacks of a hostile client, each against the real processes (one of every component,
launched for this module as `make run` launches them): each of these got through before the
shop was hardened against it (issue: hostile clients), and must not now."""

import asyncio
import contextlib
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest

from services.auth.domain import new_token, token_hash
from shopkit.bootstrap import ServiceDatabase
from shopkit.identity import IDENTITY_HEADER, Identity, IdentityKey, Role, sign_identity
from tests.conftest import admin_token_for, unique_email
from tests.events import take_dead_letters
from tests.harness import (
    admin_login,
    bearer,
    call,
    client_from,
    component_rabbitmq_url,
    event_stream,
    eventually,
    identity_key,
    login,
    loopback_address,
    next_sse_event,
    place_order,
    register,
    stream_ends,
)
from tests.processes import LaunchedSystem, launched_system

pytestmark = pytest.mark.system

STREAMS_TRIED = 300


@pytest.fixture(scope="module")
async def shop(
    databases: dict[str, ServiceDatabase], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LaunchedSystem]:
    """One of every component, the gateway behind one trusted proxy (X-Forwarded-For), room
    for hundreds of sessions per account (the big revocation)."""
    async with launched_system(
        databases, tmp_path_factory.mktemp("hostile"),
        env_overrides={"gateway": {"TRUSTED_PROXIES": "1"},
                       "auth": {"MAX_SESSIONS_PER_USER": "400"}},
    ) as launched:
        yield launched


@pytest.fixture(scope="module")
async def admin(shop: LaunchedSystem, admin_db: asyncpg.Pool) -> str:
    return await admin_token_for(shop.gateway_url, admin_db)


async def _signed_in(client: aiohttp.ClientSession) -> tuple[str, str]:
    """A new user's token and id."""
    email = unique_email()
    user = await register(client, email)
    return await login(client, email), user["id"]


async def test_three_hundred_streams_of_one_user_leave_everyone_else_served(
    shop: LaunchedSystem,
) -> None:
    """Before: one user's 300 streams took the gateway's 256 connections to the services, and
    every other notifications request waited 11 s for a 504. Now: 5 streams are that user's
    share, the rest are refused at once (too many streams, or, while the client has its share
    of requests in flight, too many requests), and another user, from another address, is
    served throughout."""
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as hogs, client_from(
        shop.gateway_url, loopback_address()
    ) as client:
        hog, _ = await _signed_in(hogs)
        other, _ = await _signed_in(client)
        answered: list[float] = []
        flooding = asyncio.Event()

        async def meanwhile() -> None:
            while not flooding.is_set():
                started = time.monotonic()
                async with asyncio.timeout(15):
                    status, _ = await call(client, "GET", "/api/notifications", other)
                assert status == 200
                answered.append(time.monotonic() - started)

        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(
            base_url=shop.gateway_url, connector=connector, timeout=timeout
        ) as flood, contextlib.AsyncExitStack() as held:
            served = asyncio.create_task(meanwhile())
            statuses = await asyncio.gather(
                *(_hold_stream(held, flood, hog) for _ in range(STREAMS_TRIED))
            )
            flooding.set()
            await served
        counted = Counter(status for status, _ in statuses)
        assert counted == {200: 5, 429: STREAMS_TRIED - 5}, counted
        assert {code for status, code in statuses if status == 429} <= {
            "too_many_streams", "too_many_requests"
        }
        assert answered and max(answered) < 5, f"slowest answer {max(answered):.1f} s"


async def _hold_stream(
    held: contextlib.AsyncExitStack, session: aiohttp.ClientSession, token: str
) -> tuple[int, str | None]:
    """Opens a stream and keeps it open: (status, the error's code)."""
    response = await held.enter_async_context(
        session.get("/api/notifications/stream", headers=bearer(token))
    )
    if response.status == 200:
        return 200, None
    body = await response.json()
    assert response.headers["Retry-After"], body
    return response.status, body["code"]


async def test_a_session_opened_before_a_promotion_gets_no_admin_rights(
    shop: LaunchedSystem,
) -> None:
    """Before: after `make admin`, a session the user had opened before could call the admin
    API. Now the promotion ends every session of the account; admin rights come from the
    admin sign-in only."""
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as client:
        email = f"ops-{secrets.token_hex(4)}@example.com"
        await register(client, email, password="user password")
        before = await login(client, email, password="user password")
        assert (await call(client, "GET", "/api/admin/orders", before))[0] == 403

        env = {**shop.processes.processes["auth"].env, "ADMIN_PASSWORD": "ops password"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.auth", "create-admin", email, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0 and b"promoted" in output, output

        async def ended() -> bool:
            return (await call(client, "GET", "/api/admin/orders", before))[0] == 401

        await eventually(ended, deadline_seconds=10)
        ordinary = await login(client, email, password="ops password")
        assert (await call(client, "GET", "/api/admin/orders", ordinary))[0] == 403
        elevated = await admin_login(client, email, password="ops password")
        assert (await call(client, "GET", "/api/admin/orders", elevated))[0] == 200


async def test_a_forged_x_forwarded_for_does_not_change_the_client_address(
    shop: LaunchedSystem,
) -> None:
    """Before: behind a proxy, the gateway took the first X-Forwarded-For line, which the
    client writes, so each guess could come from a new address. Now the address is the one the
    trusted proxy appended, and the guesses count against it."""
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as client:
        email = unique_email()
        await register(client, email)
        proxy_saw = f"198.51.100.{secrets.randbelow(250) + 1}"
        statuses = []
        for n in range(5):
            forged = f"203.0.113.{n + 1}"
            lines = [("X-Forwarded-For", forged), ("X-Forwarded-For", f"{forged}, {proxy_saw}")]
            async with client.post(
                "/api/users/login", json={"email": email, "password": f"guess {n}"},
                headers=lines,  # type: ignore[arg-type]
            ) as response:
                statuses.append(response.status)
        # 3 failures allowed per account and address, the 4th sets the lock.
        assert statuses == [401, 401, 401, 401, 429]
        async with client.post(
            "/api/users/login", json={"email": email, "password": "correct horse"},
            headers={"X-Forwarded-For": "192.0.2.77"},
        ) as response:
            assert response.status == 200, "the owner, from another address, gets in"


async def test_a_revocation_of_hundreds_of_sessions_ends_their_streams(
    shop: LaunchedSystem, admin_db: asyncpg.Pool
) -> None:
    """Before: the session ids went to the streams in one NOTIFY, which Postgres refuses from
    8000 bytes; the event was dead-lettered and the streams never ended. Now the NOTIFY names
    the revocation only."""
    await take_dead_letters("notifications.events")
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as client:
        token, user_id = await _signed_in(client)
        await admin_db.executemany(  # as if signed in from 299 other places
            "INSERT INTO auth.sessions (id, user_id, token_hash, expires_at)"
            " VALUES ($1, $2, $3, now() + interval '1 day')",
            [(uuid.uuid4(), uuid.UUID(user_id), token_hash(new_token())) for _ in range(299)],
        )
        bystander, _ = await _signed_in(client)
        async with event_stream(shop.gateway_url, token) as ending, event_stream(
            shop.gateway_url, bystander
        ) as staying:
            status, body = await call(client, "POST", "/api/users/logout-all", token)
            assert status == 200 and body["data"]["revoked"] == 300
            await stream_ends(ending)
            with pytest.raises(TimeoutError):  # only the revoked sessions' streams end
                await stream_ends(staying, deadline_seconds=1)
    assert await take_dead_letters("notifications.events") == []


async def test_a_made_up_notify_pushes_nothing_into_a_stream(
    shop: LaunchedSystem, databases: dict[str, ServiceDatabase], admin: str
) -> None:
    """Before: any service's database role could NOTIFY a made-up notification straight into
    a user's stream (channels are database-wide). Now a notice only names rows, and the
    stream shows what the notifications table holds."""
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as client:
        token, user_id = await _signed_in(client)
        order = await place_order(client, token, admin)
        forger = await asyncpg.connect(databases["orders"].dsn)  # another service's role
        try:
            async with event_stream(shop.gateway_url, token) as stream:
                made_up = {"id": str(uuid.uuid4()), "user_id": user_id, "type": "order_status",
                           "title": "Pay here: evil.example", "body": "!", "order_id": None,
                           "created_at": "2026-01-01T00:00:00+00:00", "read_at": None}
                for channel, payload in (
                    ("notifications_new", f"{user_id}:{uuid.uuid4()}"),
                    ("notifications_new", orjson.dumps(made_up).decode()),
                    ("notifications_sessions_revoked", f"{user_id}:{uuid.uuid4()}"),
                ):
                    await forger.execute("SELECT pg_notify($1, $2)", channel, payload)
                status, _ = await call(client, "POST",
                                       f"/api/admin/orders/{order['id']}/status", admin,
                                       {"status": "confirmed"})
                assert status == 200
                async with asyncio.timeout(15):
                    event = await next_sse_event(stream)
            pushed = orjson.loads(event["data"])
            assert pushed["title"] == "Your order is confirmed", "the first push is the real one"
        finally:
            await forger.close()


async def test_order_events_published_with_the_gateways_credentials_are_refused(
    shop: LaunchedSystem,
) -> None:
    """Before: every component used one RabbitMQ user, so the internet-facing gateway could
    publish `order.*` events. Now RabbitMQ refuses them: each component's user may publish
    only its own event types, and none may write to another's queues."""
    body = orjson.dumps({"id": str(uuid.uuid4()), "type": "order.created", "source": "orders",
                         "occurredAt": "2026-01-01T00:00:00+00:00", "data": {}})
    for component, key in (("gateway", "order.created"), ("auth", "order.created"),
                           ("tracking", "order.status_changed")):
        with pytest.raises(aio_pika.exceptions.AMQPError, match="ACCESS_REFUSED"):
            await _publish(component_rabbitmq_url(component), "shop.events", key, body)
    with pytest.raises(aio_pika.exceptions.AMQPError, match="ACCESS_REFUSED"):
        # The default exchange would reach any queue by its name.
        await _publish(component_rabbitmq_url("tracking"), "", "notifications.events", body)
    connection = await aio_pika.connect(component_rabbitmq_url("gateway"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"gateway.revocations.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        with pytest.raises(aio_pika.exceptions.AMQPError, match="ACCESS_REFUSED"):
            await queue.bind("shop.events", routing_key="order.#")
    # What each may do still works: orders publishes its own events.
    await _publish(component_rabbitmq_url("orders"), "shop.events", "order.nobody.listens", body)


async def test_an_event_under_a_key_its_publisher_may_use_but_of_another_type_is_not_believed(
    shop: LaunchedSystem,
) -> None:
    """RabbitMQ checks the routing key, not the body: auth may publish under
    `auth.session_revoked`, which notifications hears. An order event inside it (claiming to
    come from orders) would make a notification for anyone; the consumer believes an event
    only under its own type's key."""
    await take_dead_letters("notifications.events")
    async with aiohttp.ClientSession(base_url=shop.gateway_url) as client:
        token, user_id = await _signed_in(client)
        forged = orjson.dumps({
            "id": str(uuid.uuid4()), "type": "order.status_changed", "source": "orders",
            "occurredAt": "2026-01-01T00:00:00+00:00",
            "data": {"orderId": str(uuid.uuid4()), "userId": user_id, "from": "placed",
                     "to": "cancelled", "note": "Pay again at evil.example", "version": 2},
        })
        await _publish(component_rabbitmq_url("auth"), "shop.events", "auth.session_revoked",
                       forged)
        dead = await eventually(lambda: take_dead_letters("notifications.events"))
        assert "under 'auth.session_revoked'" in dead[0].headers["x-dead-letter-reason"]
        _, body = await call(client, "GET", "/api/notifications", token)
        assert body["data"]["items"] == []


async def _publish(url: str, exchange_name: str, key: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = (channel.default_exchange if not exchange_name
                    else await channel.get_exchange(exchange_name))
        await exchange.publish(aio_pika.Message(body), routing_key=key)


async def test_an_identity_a_service_signs_with_its_own_key_is_refused_by_the_others(
    shop: LaunchedSystem,
) -> None:
    """Before: every component held the one identity secret, so any compromised service
    could vouch, as admin, to all the others. Now each holds a key of its own."""
    caller = Identity(Role.ADMIN, user_id=uuid.uuid4(), session_id=uuid.uuid4(),
                      client_address="127.0.0.1")
    orders_key = identity_key("orders")
    async with aiohttp.ClientSession() as direct:
        for service, path in (("tracking", f"/api/orders/{uuid.uuid4()}/tracking"),
                              ("auth", "/api/users/me"),
                              ("notifications", "/api/notifications")):
            for key in (orders_key, IdentityKey(service, orders_key.secret)):
                header = sign_identity(caller, key, "GET", path)
                async with direct.get(shop.url(service) + path,
                                      headers={IDENTITY_HEADER: header}) as response:
                    assert response.status == 401, (service, key.audience)
        path = "/api/admin/orders"
        header = sign_identity(caller, orders_key, "GET", path)
        async with direct.get(shop.url("orders") + path,
                              headers={IDENTITY_HEADER: header}) as response:
            assert response.status == 200, "the gateway's vouching, with orders' key, works"
    assert "IDENTITY_SECRET" not in shop.processes.processes["gateway"].env
    services = [shop.processes.processes[name].env["IDENTITY_SECRET"]
                for name in ("auth", "orders", "tracking", "notifications")]
    assert len(set(services)) == 4, "each service holds a key of its own"
