"""The gateway's token cache against the real auth service and RabbitMQ: a hot token costs no
call to auth, and a logout is refused at once where it happened and within milliseconds on
every other gateway instance."""

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from gateway.revocations import TOKEN_CACHE_KEY
from tests.conftest import unique_email
from tests.harness import System, another_gateway, call, eventually, login, register

VALIDATE = {"component": "auth", "route": "/internal/sessions/validate", "method": "POST"}


def validations() -> float:
    """Calls auth has answered to validate a token, so far, in this process."""
    return sum(
        REGISTRY.get_sample_value("shop_http_requests_total", {**VALIDATE, "status": s}) or 0
        for s in ("200", "401")
    )


async def hearing_revocations(app: web.Application) -> None:
    await eventually(lambda: _listening(app), deadline_seconds=10)


async def _listening(app: web.Application) -> bool:
    return app[TOKEN_CACHE_KEY].listening


@pytest.fixture
async def signed_in(client: aiohttp.ClientSession, system: System) -> AsyncIterator[str]:
    await hearing_revocations(system.apps["gateway"])
    email = unique_email()
    await register(client, email)
    yield await login(client, email)


async def test_a_hot_token_is_checked_with_auth_once(
    client: aiohttp.ClientSession, signed_in: str
) -> None:
    before = validations()
    for _ in range(20):
        status, _ = await call(client, "GET", "/api/users/me", signed_in)
        assert status == 200
    assert validations() - before == 1


async def test_logout_is_refused_at_once_by_the_gateway_that_served_it(
    client: aiohttp.ClientSession, signed_in: str
) -> None:
    assert (await call(client, "GET", "/api/users/me", signed_in))[0] == 200
    assert (await call(client, "POST", "/api/users/logout", signed_in))[0] == 200
    assert (await call(client, "GET", "/api/users/me", signed_in))[0] == 401


async def test_revoking_another_session_is_refused_at_once_too(
    client: aiohttp.ClientSession, system: System
) -> None:
    await hearing_revocations(system.apps["gateway"])
    email = unique_email()
    await register(client, email)
    first, second = await login(client, email), await login(client, email)
    _, me = await call(client, "GET", "/api/users/sessions", second)
    second_session = next(s["id"] for s in me["data"]["items"] if s["current"])
    assert (await call(client, "GET", "/api/users/me", second))[0] == 200
    status, _ = await call(client, "DELETE", f"/api/users/sessions/{second_session}", first)
    assert status == 200
    assert (await call(client, "GET", "/api/users/me", second))[0] == 401
    assert (await call(client, "GET", "/api/users/me", first))[0] == 200


async def test_logout_on_one_gateway_is_refused_by_another_within_milliseconds(
    client: aiohttp.ClientSession, system: System, signed_in: str
) -> None:
    # A long lifetime, so only the event can explain the refusal.
    async with another_gateway(system, token_cache_seconds=120) as other_url, \
            aiohttp.ClientSession(base_url=other_url) as other:
        await hearing_revocations_of(other_url, signed_in)
        assert (await call(client, "POST", "/api/users/logout", signed_in))[0] == 200
        started = time.monotonic()

        async def refused() -> bool:
            return (await call(other, "GET", "/api/users/me", signed_in))[0] == 401

        await eventually(refused, deadline_seconds=2, interval=0.005)
        assert time.monotonic() - started < 2


async def hearing_revocations_of(url: str, token: str) -> None:
    """The other gateway has the token cached and hears revocations: after its first answer,
    further ones no longer reach auth."""
    async with aiohttp.ClientSession(base_url=url) as other:

        async def cached() -> bool:
            assert (await call(other, "GET", "/api/users/me", token))[0] == 200
            before = validations()
            assert (await call(other, "GET", "/api/users/me", token))[0] == 200
            return validations() == before

        await eventually(cached, deadline_seconds=10)


async def test_a_gateway_that_cannot_hear_revocations_asks_auth_every_time(
    system: System, signed_in: str
) -> None:
    deaf = {"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/"}
    async with another_gateway(system, **deaf) as url, \
            aiohttp.ClientSession(base_url=url) as other:
        before = validations()
        for _ in range(5):
            assert (await call(other, "GET", "/api/users/me", signed_in))[0] == 200
        assert validations() - before == 5
