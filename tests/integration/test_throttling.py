"""Failed sign-ins are counted in Postgres per account and per client address (429 past them)."""

import asyncio
import random

import aiohttp

from tests.conftest import unique_email
from tests.system import register, running_system


async def _attempt(
    client: aiohttp.ClientSession, email: str, password: str, **headers: str
) -> tuple[int, dict]:
    async with client.post(
        "/api/users/login", json={"email": email, "password": password}, headers=headers
    ) as response:
        return response.status, dict(response.headers) | {"body": await response.json()}


async def test_an_account_is_locked_after_repeated_failures(client: aiohttp.ClientSession) -> None:
    # The shared test system allows 3 failures per account.
    email = unique_email()
    await register(client, email)
    statuses = [(await _attempt(client, email, "wrong password"))[0] for _ in range(4)]
    assert statuses == [401, 401, 401, 401]  # the 4th passes the limit and sets the lock

    status, info = await _attempt(client, email, "wrong password")
    assert status == 429
    assert info["body"]["code"] == "too_many_requests"
    assert 1 <= int(info["Retry-After"]) <= 60

    status, _ = await _attempt(client, email, "correct horse")
    assert status == 429, "a locked account is locked for the right password too"

    other = unique_email()
    await register(client, other)
    status, _ = await _attempt(client, other, "correct horse")
    assert status == 200, "one account's lock does not touch another's"


async def test_no_spelling_of_a_locked_account_gets_in(client: aiohttp.ClientSession) -> None:
    """Case variants Postgres folds onto the same account (even Unicode ones such as the
    dotted capital I) count against it and are locked with it."""
    local = f"victim-{random.randint(0, 10**9)}"
    email = f"{local}@example.com"
    await register(client, email)
    for _ in range(4):
        assert (await _attempt(client, email, "wrong password"))[0] == 401
    for variant in (email.upper(), email.replace("i", "\u0130", 1), email.title()):
        status, _ = await _attempt(client, variant, "correct horse")
        assert status == 429, variant


async def test_success_resets_the_account_count(client: aiohttp.ClientSession) -> None:
    email = unique_email()
    await register(client, email)
    for _ in range(3):
        assert (await _attempt(client, email, "wrong password"))[0] == 401
        assert (await _attempt(client, email, "wrong password"))[0] == 401
        assert (await _attempt(client, email, "correct horse"))[0] == 200


async def test_parallel_guessing_gets_no_more_than_the_limit_through(
    client: aiohttp.ClientSession,
) -> None:
    email = unique_email()
    await register(client, email)
    results = await asyncio.gather(*(_attempt(client, email, f"guess {i}") for i in range(12)))
    statuses = sorted(status for status, _ in results)
    # 3 allowed plus the one that passes the limit and sets the lock; the rest are refused.
    assert statuses == [401] * 4 + [429] * 8


async def test_one_address_is_limited_across_accounts(databases) -> None:
    # A gateway that trusts X-Forwarded-For lets this test use an address of its own, so the
    # lock it sets never reaches the other tests' 127.0.0.1.
    address = f"198.51.100.{random.randint(1, 254)}"
    neighbour = f"203.0.113.{random.randint(1, 254)}"
    async with running_system(
        databases,
        auth={"login_max_failures_per_address": 3, "login_max_failures_per_account": 50},
        gateway={"trust_forwarded_for": True},
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        accounts = [unique_email() for _ in range(5)]
        statuses = [
            (await _attempt(client, email, "wrong password", **{"X-Forwarded-For": address}))[0]
            for email in accounts
        ]
        assert statuses == [401, 401, 401, 401, 429]
        status, info = await _attempt(
            client, unique_email(), "anything at all", **{"X-Forwarded-For": address}
        )
        assert status == 429 and int(info["Retry-After"]) >= 1
        # What a client writes before the proxy's own entry does not change its address.
        spoofed = {"X-Forwarded-For": f"{neighbour}, {address}"}
        status, _ = await _attempt(client, unique_email(), "anything at all", **spoofed)
        assert status == 429
        status, _ = await _attempt(
            client, unique_email(), "anything at all", **{"X-Forwarded-For": neighbour}
        )
        assert status == 401, "another address is not locked"


async def test_instances_share_the_count(databases) -> None:
    """Two auth instances (each behind its own gateway) agree: the count lives in Postgres."""
    email = unique_email()
    settings = {"login_max_failures_per_account": 2}
    async with running_system(databases, auth=settings) as one, running_system(
        databases, auth=settings
    ) as two, aiohttp.ClientSession(base_url=one.gateway_url) as first, aiohttp.ClientSession(
        base_url=two.gateway_url
    ) as second:
        await register(first, email)
        assert (await _attempt(first, email, "wrong 1"))[0] == 401
        assert (await _attempt(second, email, "wrong 2"))[0] == 401
        assert (await _attempt(first, email, "wrong 3"))[0] == 401
        assert (await _attempt(second, email, "correct horse"))[0] == 429
