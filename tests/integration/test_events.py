"""Events the auth service publishes to `shop.events` (contract §5)."""

import asyncio
import time
import uuid

import aio_pika
import aiohttp
import orjson

from tests.conftest import unique_email
from tests.integration.test_gateway import wait_until_ready
from tests.system import RABBITMQ_URL, bearer, login, register


async def _next_message(
    queue: aio_pika.abc.AbstractQueue, deadline_seconds: float = 10
) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError("no message arrived before the deadline")


async def test_logout_and_revocations_publish_session_revoked(
    client: aiohttp.ClientSession,
) -> None:
    await wait_until_ready(client)
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "shop.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="auth.session_revoked")

        email = unique_email()
        user = await register(client, email)
        token = await login(client, email)
        others = [await login(client, email) for _ in range(2)]
        async with client.get("/api/users/sessions", headers=bearer(token)) as response:
            current = next(s["id"] for s in (await response.json())["data"] if s["current"])

        async with client.post(
            "/api/users/logout", headers={**bearer(token), "X-Request-Id": "logout-req-1"}
        ) as response:
            assert response.status == 200
        message = await _next_message(queue)
        body = orjson.loads(message.body)
        assert message.message_id == body["id"] and uuid.UUID(body["id"])
        assert message.type == "auth.session_revoked" == body["type"]
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.headers["x-request-id"] == "logout-req-1"
        assert body["source"] == "auth" and body["occurredAt"]
        assert body["data"] == {"userId": user["id"], "sessionIds": [current]}

        async with client.post("/api/users/logout-all", headers=bearer(others[0])) as response:
            assert response.status == 200
        body = orjson.loads((await _next_message(queue)).body)
        assert body["data"]["userId"] == user["id"] and len(body["data"]["sessionIds"]) == 2
    finally:
        await connection.close()
