"""Dependencies going away: answers are 503 (never 500, never a hang), and everything comes
back by itself when they return."""

import asyncio

import aiohttp
import asyncpg

from tests.conftest import unique_email
from tests.harness import (
    System,
    bearer,
    event_stream,
    eventually,
    postgres_stopped,
    wait_until_ready,
)


async def _get(client: aiohttp.ClientSession, path: str, **headers: str) -> tuple[int, dict, dict]:
    async with asyncio.timeout(15), client.get(path, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_postgres_down_is_503_and_everything_recovers_on_its_own(
    system: System, client: aiohttp.ClientSession, user_token: str, admin_db: asyncpg.Pool
) -> None:
    await wait_until_ready(client)
    async with event_stream(system.gateway_url, user_token) as stream:
        async with postgres_stopped(admin_db):
            await _everything_answers_503(client, user_token)
        # No restart of any component: the pools replace their broken connections.
        await wait_until_ready(client, deadline_seconds=60)

        async def signed_in_again() -> bool:
            status, _, _ = await _get(client, "/api/users/me", **bearer(user_token))
            return status == 200

        await eventually(signed_in_again, deadline_seconds=30)
        status, _, _ = await _get(client, "/api/products")
        assert status == 200
        # Pushes may have been missed while the listener was down: the stream was ended, so its
        # client reconnects and catches up with the list.
        async with asyncio.timeout(15):
            while await stream.content.readline():
                pass


async def _everything_answers_503(client: aiohttp.ClientSession, token: str) -> None:
    status, body, headers = await _get(client, "/api/products")
    assert status == 503 and body["code"] == "database_unavailable", body
    assert headers["Retry-After"] and "requestId" in body
    assert "asyncpg" not in str(body) and "SELECT" not in str(body)

    status, body, headers = await _get(client, "/api/users/me", **bearer(token))
    assert status == 503 and headers["Retry-After"], body

    async with asyncio.timeout(15), client.post(
        "/api/users/register",
        json={"email": unique_email(), "password": "correct horse", "name": "Down"},
    ) as response:
        assert response.status == 503

    async def ping_degraded() -> dict | None:
        # Its answer may be up to FANOUT_CACHE_SECONDS old.
        status, body, _ = await _get(client, "/api/ping")
        return body if status == 503 else None

    body = await eventually(ping_degraded, deadline_seconds=5)
    assert body["status"] == "degraded"
    assert all("postgres" in state for state in body["services"].values()), body
