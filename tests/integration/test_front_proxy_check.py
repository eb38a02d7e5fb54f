"""GET /internal/sessions/check: what nginx `auth_request` asks when it stands in for the gateway
(the benchmark's peer). Off by default."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from shopkit.identity import IDENTITY_HEADER
from tests.conftest import unique_email
from tests.harness import IDENTITY_SECRETS, System, bearer, login, register, running_system

CHECK = "/internal/sessions/check"


@pytest.fixture(scope="module")
async def checking_system(databases) -> AsyncIterator[System]:
    # Auth stands in for the gateway towards orders too, as the benchmark's nginx needs.
    secrets = {"orders": IDENTITY_SECRETS["orders"]}
    async with running_system(
        databases, auth={"front_proxy_check": True, "front_proxy_secrets": secrets}
    ) as system:
        yield system


async def _signed_in(system: System) -> tuple[str, str]:
    """A new user's email and token."""
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        email = unique_email()
        await register(client, email)
        return email, await login(client, email)


async def _check(
    auth_url: str, token: str, method: str, uri: str, service: str = "auth"
) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session, session.get(
        auth_url + CHECK,
        headers={**bearer(token), "X-Original-Method": method, "X-Original-URI": uri,
                 "X-Shop-Service": service},
    ) as response:
        await response.read()
        return response


async def test_a_valid_token_gets_an_identity_the_services_accept(
    checking_system: System,
) -> None:
    auth_url = checking_system.service_urls["auth"]
    email, token = await _signed_in(checking_system)
    checked = await _check(auth_url, token, "GET", "/api/users/me")
    assert checked.status == 204
    identity = checked.headers[IDENTITY_HEADER]
    async with aiohttp.ClientSession() as direct:
        async with direct.get(auth_url + "/api/users/me",
                              headers={IDENTITY_HEADER: identity}) as response:
            assert response.status == 200
            assert (await response.json())["data"]["email"] == email
        # Signed for that method and URI with no body: nothing else.
        async with direct.post(auth_url + "/api/users/logout", json={},
                               headers={IDENTITY_HEADER: identity}) as response:
            assert response.status == 401
    assert (await _check(auth_url, token, "GET", "/api/admin/orders")).status == 403
    assert (await _check(auth_url, "not-a-token", "GET", "/api/users/me")).status == 401


async def test_it_vouches_only_to_the_services_it_holds_a_key_for(
    checking_system: System,
) -> None:
    auth_url = checking_system.service_urls["auth"]
    _, token = await _signed_in(checking_system)
    checked = await _check(auth_url, token, "GET", "/api/orders", service="orders")
    assert checked.status == 204
    async with aiohttp.ClientSession() as direct, direct.get(
        checking_system.service_urls["orders"] + "/api/orders",
        headers={IDENTITY_HEADER: checked.headers[IDENTITY_HEADER]},
    ) as response:
        assert response.status == 200
    refused = await _check(auth_url, token, "GET", "/api/notifications", service="notifications")
    assert refused.status == 403


async def test_it_is_not_served_unless_turned_on(system: System) -> None:
    response = await _check(system.service_urls["auth"], "x" * 43, "GET", "/api/users/me")
    assert response.status == 401  # no identity, no such route: refused like any other call
