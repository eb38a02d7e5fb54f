"""Events the auth service publishes to `shop.events` (contract §5)."""

import uuid
from typing import Any

import aio_pika
import aiohttp
import orjson

from tests.conftest import unique_email
from tests.events import watch_events
from tests.harness import bearer, login, register, wait_until_ready


async def test_logout_and_revocations_publish_session_revoked(
    client: aiohttp.ClientSession,
) -> None:
    await wait_until_ready(client)
    async with watch_events("auth.session_revoked") as events:
        email = unique_email()
        user = await register(client, email)
        token = await login(client, email)
        others = [await login(client, email) for _ in range(2)]
        async with client.get("/api/users/sessions", headers=bearer(token)) as response:
            sessions = (await response.json())["data"]["items"]
            current = next(s["id"] for s in sessions if s["current"])

        async with client.post(
            "/api/users/logout", headers={**bearer(token), "X-Request-Id": "logout-req-1"}
        ) as response:
            assert response.status == 200

        def mine(body: dict[str, Any]) -> bool:
            return body["data"]["userId"] == user["id"]

        message = await events.next_where(mine)
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
        body = orjson.loads((await events.next_where(mine)).body)
        assert len(body["data"]["sessionIds"]) == 2
