"""The operations panel, `GET /api/admin/operations`: every component's readiness, every
outbox's backlog and every dead-letter queue's depth, read from the real Postgres and RabbitMQ,
and still answered (200) while a part of the system is down."""

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from gateway.routes import Access, match_route
from services.notifications.app import create_app as create_notifications
from services.notifications.handlers import SUBSCRIPTION as NOTIFICATIONS
from services.tracking.handlers import SUBSCRIPTION as TRACKING
from shopkit.dlq import dead_letter_counts
from shopkit.identity import IDENTITY_HEADER, Identity, Role, sign_identity
from shopkit.operations import OPERATIONS_PATH as SERVICE_PATH
from shopkit.runner import connection_options
from shopkit.server import EnvelopeAppRunner
from tests.events import publish_event, take_dead_letters
from tests.harness import (
    RABBITMQ_URL,
    System,
    another_gateway,
    bearer,
    create_address,
    create_product,
    eventually,
    identity_key,
    rabbitmq_stopped,
    wait_until_ready,
)

PATH = "/api/admin/operations"
SERVICES = ["auth", "orders", "tracking", "notifications"]
DEAD_LETTER_QUEUES = [TRACKING.dead_letters, NOTIFICATIONS.dead_letters]

Panel = dict[str, Any]


async def _panel(client: aiohttp.ClientSession, token: str) -> Panel:
    """The panel's data; every answer, whatever is down, is a 200 in the success envelope."""
    async with client.get(PATH, headers=bearer(token)) as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["success"] is True and set(body) == {"success", "data"}, body
    return body["data"]


def _panel_when(
    client: aiohttp.ClientSession, token: str, done: Callable[[Panel], bool]
) -> Callable[[], Any]:
    async def check() -> Panel | None:
        panel = await _panel(client, token)
        return panel if done(panel) else None

    return check


def _ready(panel: Panel) -> dict[str, bool]:
    return {component["name"]: component["ready"] for component in panel["components"]}


def _outbox(panel: Panel, service: str) -> dict[str, Any]:
    (outbox,) = [o for o in panel["outboxes"] if o["service"] == service]
    return outbox


def _messages(panel: Panel, queue: str) -> int | None:
    (dead,) = [d for d in panel["deadLetters"] if d["queue"] == queue]
    return dead["messages"]


def _all_ready(panel: Panel) -> bool:
    return all(_ready(panel).values())


async def test_an_admin_sees_every_component_outbox_and_dead_letter_queue(
    system: System, client: aiohttp.ClientSession, admin_token: str
) -> None:
    await wait_until_ready(client)
    panel = await eventually(_panel_when(client, admin_token, _all_ready))
    assert set(panel) == {"components", "outboxes", "deadLetters"}
    # The gateway first, then the services in the gateway's upstream order.
    assert list(system.settings["gateway"].upstreams()) == SERVICES
    assert panel["components"] == [
        {"name": name, "ready": True} for name in ["gateway", *SERVICES]
    ]
    assert [outbox["service"] for outbox in panel["outboxes"]] == SERVICES
    for outbox in panel["outboxes"]:
        assert set(outbox) == {"service", "unsent", "oldestUnsentAgeSeconds"}
        assert isinstance(outbox["unsent"], int) and outbox["unsent"] >= 0
        if outbox["unsent"] == 0:
            assert outbox["oldestUnsentAgeSeconds"] is None, outbox
        else:
            assert outbox["oldestUnsentAgeSeconds"] >= 0, outbox
    assert [dead["queue"] for dead in panel["deadLetters"]] == DEAD_LETTER_QUEUES
    for dead in panel["deadLetters"]:
        assert set(dead) == {"queue", "messages"}
        assert isinstance(dead["messages"], int) and dead["messages"] >= 0


async def test_only_an_admin_may_see_it(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    assert match_route(PATH).access is Access.ADMIN  # as the route table guards /api/admin/*
    for headers, status, code in (
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer nonsense"}, 401, "unauthorized"),
        (bearer(user_token), 403, "forbidden"),
    ):
        async with client.get(PATH, headers=headers) as response:
            body = await response.json()
            assert response.status == status, body
            assert body["success"] is False and body["code"] == code and body["requestId"]
    async with client.post(PATH, headers=bearer(admin_token)) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET,HEAD"
    async with client.post(PATH) as response:
        assert response.status == 401, "a method it does not serve is refused after the token"


async def test_each_services_own_part_answers_the_gateway_alone_and_for_an_admin(
    system: System, client: aiohttp.ClientSession, admin_token: str
) -> None:
    """Clients cannot reach it through the gateway; reached directly, a service wants the
    gateway's identity (401) and an admin's (403)."""
    async with client.get(SERVICE_PATH, headers=bearer(admin_token)) as response:
        assert response.status == 404
    someone = uuid.uuid4()
    async with aiohttp.ClientSession() as direct:
        for service in SERVICES:
            url = system.service_urls[service] + SERVICE_PATH
            for identity, status in (
                (None, 401),
                (Identity(Role.USER, user_id=someone), 403),
                (Identity(Role.ADMIN, user_id=someone), 200),
            ):
                headers = {} if identity is None else {IDENTITY_HEADER: sign_identity(
                    identity, identity_key(service), "GET", SERVICE_PATH)}
                async with direct.get(url, headers=headers) as response:
                    assert response.status == status, (service, identity)


async def test_a_dead_lettered_message_shows_in_its_queues_count(
    client: aiohttp.ClientSession, admin_token: str
) -> None:
    await take_dead_letters(TRACKING.queue)  # each test sees only its own
    await eventually(_panel_when(
        client, admin_token, lambda panel: _messages(panel, TRACKING.dead_letters) == 0
    ))
    poison = f"{{not json {uuid.uuid4()}".encode()
    await publish_event("order.created", {}, raw_body=poison)
    try:
        panel = await eventually(_panel_when(
            client, admin_token, lambda panel: (_messages(panel, TRACKING.dead_letters) or 0) >= 1
        ))
        # What the operator's dlq command reads too.
        counts = await dead_letter_counts(RABBITMQ_URL, [TRACKING.queue])
        assert counts[TRACKING.dead_letters] >= _messages(panel, TRACKING.dead_letters)
        assert _messages(panel, NOTIFICATIONS.dead_letters) is not None
    finally:
        dead = await take_dead_letters(TRACKING.queue)
    assert poison in [message.body for message in dead]


async def test_with_rabbitmq_down_it_answers_and_shows_the_events_waiting_in_the_outbox(
    system: System, client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    await wait_until_ready(client)
    address = await create_address(client, user_token)
    product = await create_product(client, admin_token, stock=5)
    async with rabbitmq_stopped(system):
        async with client.post(
            "/api/orders", headers=bearer(user_token),
            json={"addressId": address["id"],
                  "items": [{"productId": product["id"], "quantity": 1}]},
        ) as response:
            assert response.status == 201, await response.text()

        def shows_the_outage(panel: Panel) -> bool:
            orders = _outbox(panel, "orders")
            return (
                not any(_ready(panel)[name] for name in SERVICES)
                and orders["unsent"] is not None and orders["unsent"] >= 1
            )

        panel = await eventually(_panel_when(client, admin_token, shows_the_outage))
        assert _ready(panel)["gateway"] is True
        assert _outbox(panel, "orders")["oldestUnsentAgeSeconds"] >= 0
        # Postgres still answers: every backlog is counted, only the broker's part is unknown.
        assert all(outbox["unsent"] is not None for outbox in panel["outboxes"])
        assert [dead["queue"] for dead in panel["deadLetters"]] == DEAD_LETTER_QUEUES
        assert all(dead["messages"] is None for dead in panel["deadLetters"])

    def drained(panel: Panel) -> bool:
        orders = _outbox(panel, "orders")
        return orders["unsent"] == 0 and orders["oldestUnsentAgeSeconds"] is None

    panel = await eventually(_panel_when(client, admin_token, drained), deadline_seconds=30)
    assert all(dead["messages"] is not None for dead in panel["deadLetters"])


@dataclass
class _Instance:
    url: str
    runner: web.AppRunner
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


@asynccontextmanager
async def _another_notifications(system: System) -> AsyncIterator[_Instance]:
    """A second notifications instance beside the system's, served as the system's are;
    stopped at the end if the test did not stop it."""
    settings = system.settings["notifications"]
    runner = EnvelopeAppRunner(create_notifications(settings), **connection_options(settings))
    await runner.setup()
    instance = _Instance("", runner)
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        instance.url = f"http://{host}:{port}"
        yield instance
    finally:
        await instance.stop()


async def test_a_service_that_cannot_be_asked_shows_as_down_and_the_rest_still_answer(
    system: System, admin_token: str
) -> None:
    async with (
        _another_notifications(system) as notifications,
        another_gateway(system, notifications_url=notifications.url) as gateway_url,
        aiohttp.ClientSession(base_url=gateway_url) as client,
    ):
        panel = await eventually(_panel_when(client, admin_token, _all_ready))
        assert _messages(panel, NOTIFICATIONS.dead_letters) is not None
        await notifications.stop()

        def notifications_down(panel: Panel) -> bool:
            return _ready(panel) == {**{name: True for name in _ready(panel)},
                                     "notifications": False}

        panel = await eventually(_panel_when(client, admin_token, notifications_down))
        assert _outbox(panel, "notifications") == {
            "service": "notifications", "unsent": None, "oldestUnsentAgeSeconds": None,
        }
        # Its queue is still listed, as it named it before, its count unknown.
        assert [dead["queue"] for dead in panel["deadLetters"]] == DEAD_LETTER_QUEUES
        assert _messages(panel, NOTIFICATIONS.dead_letters) is None
        assert _messages(panel, TRACKING.dead_letters) is not None
        assert all(_outbox(panel, name)["unsent"] is not None
                   for name in ("auth", "orders", "tracking"))


async def test_a_gateway_that_never_reached_a_service_still_answers(
    system: System, admin_token: str
) -> None:
    """Down from the start: nothing is known of its queues, but the rest is all there."""
    async with (
        another_gateway(system, tracking_url="http://127.0.0.1:9") as gateway_url,
        aiohttp.ClientSession(base_url=gateway_url) as client,
    ):
        panel = await _panel(client, admin_token)
    assert _ready(panel) == {"gateway": True, "auth": True, "orders": True, "tracking": False,
                             "notifications": True}
    assert _outbox(panel, "tracking") == {
        "service": "tracking", "unsent": None, "oldestUnsentAgeSeconds": None,
    }
    assert [dead["queue"] for dead in panel["deadLetters"]] == [NOTIFICATIONS.dead_letters]
