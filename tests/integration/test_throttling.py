"""Failed sign-ins are counted in Postgres per account and client address, per account, and per
address (429 past them); a guesser cannot lock an account's owner out."""

import asyncio
import random

import aiohttp
from multidict import CIMultiDict

from tests.conftest import unique_email
from tests.harness import client_from, loopback_address, register, running_system


async def _attempt(
    client: aiohttp.ClientSession, email: str, password: str, **headers: str
) -> tuple[int, dict]:
    async with client.post(
        "/api/users/login", json={"email": email, "password": password}, headers=headers
    ) as response:
        return response.status, dict(response.headers) | {"body": await response.json()}


async def test_a_guesser_is_locked_out_and_the_owner_is_not(system, client) -> None:
    """The shared test system allows 3 failures per account and address. The guesser's
    address is locked for the account, right password included; the owner, signing in from
    an address that has not failed, gets in."""
    email = unique_email()
    await register(client, email)
    async with client_from(system.gateway_url, loopback_address()) as guesser:
        statuses = [(await _attempt(guesser, email, "wrong password"))[0] for _ in range(4)]
        assert statuses == [401, 401, 401, 401]  # the 4th passes the limit and sets the lock
        status, info = await _attempt(guesser, email, "wrong password")
        assert status == 429
        assert info["body"]["code"] == "too_many_requests"
        assert 1 <= int(info["Retry-After"]) <= 60
        status, _ = await _attempt(guesser, email, "correct horse")
        assert status == 429, "locked for the right password too, from that address"

    async with client_from(system.gateway_url, loopback_address()) as owner:
        for _ in range(3):  # while the guesser keeps the lock fresh
            status, _ = await _attempt(owner, email, "correct horse")
            assert status == 200, "the owner, from another address, gets in"

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


async def test_success_resets_the_count_from_that_address(client: aiohttp.ClientSession) -> None:
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


async def test_a_guess_from_many_addresses_meets_the_account_ceiling(databases) -> None:
    """Failures from every address add up for the account: past its (higher) ceiling the
    account is locked for everyone, its owner included."""
    async with running_system(
        databases, auth={"login_max_failures_per_account_and_address": 100,
                         "login_max_failures_per_account": 5},
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        email = unique_email()
        await register(client, email)
        statuses = []
        for _ in range(3):
            async with client_from(own.gateway_url, loopback_address()) as guesser:
                statuses += [(await _attempt(guesser, email, "wrong"))[0] for _ in range(2)]
        assert statuses == [401] * 6  # the 6th passed the ceiling and set the lock
        async with client_from(own.gateway_url, loopback_address()) as owner:
            status, _ = await _attempt(owner, email, "correct horse")
        assert status == 429


async def test_one_address_is_limited_across_accounts(databases) -> None:
    async with running_system(
        databases, auth={"login_max_failures_per_address": 3},
    ) as own, client_from(own.gateway_url, loopback_address()) as client, client_from(
        own.gateway_url, loopback_address()
    ) as neighbour:
        statuses = [(await _attempt(client, unique_email(), "wrong password"))[0]
                    for _ in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        status, info = await _attempt(client, unique_email(), "anything at all")
        assert status == 429 and int(info["Retry-After"]) >= 1
        status, _ = await _attempt(neighbour, unique_email(), "anything at all")
        assert status == 401, "another address is not locked"


async def test_what_a_client_writes_in_x_forwarded_for_is_not_its_address(databases) -> None:
    """Behind one trusted proxy, the client address is the entry that proxy appended: the
    last one, on the last X-Forwarded-For line. Entries the client wrote itself, on the same
    line or on lines of their own, change nothing."""
    proxy_saw = f"198.51.100.{random.randint(1, 254)}"
    async with running_system(
        databases, auth={"login_max_failures_per_address": 3}, gateway={"trusted_proxies": 1},
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        for n in range(4):
            forged = f"203.0.113.{n + 1}"
            lines = [("X-Forwarded-For", forged), ("X-Forwarded-For", f"{forged}, {proxy_saw}")]
            async with client.post(
                "/api/users/login", json={"email": unique_email(), "password": "x"},
                headers=CIMultiDict(lines),
            ) as response:
                assert response.status == 401
        status, _ = await _attempt(
            client, unique_email(), "x", **{"X-Forwarded-For": f"10.9.8.7, {proxy_saw}"}
        )
        assert status == 429, "every attempt counted against the address the proxy saw"


async def test_instances_share_the_count(databases) -> None:
    """Two auth instances (each behind its own gateway) agree: the count lives in Postgres."""
    email = unique_email()
    settings = {"login_max_failures_per_account_and_address": 2}
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
