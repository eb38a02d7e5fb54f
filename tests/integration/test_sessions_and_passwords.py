"""Contract §4 Auth, the parts a hostile client tests: admin rights only through the admin
sign-in, password change, idle sessions, the per-account session cap, the registration throttle
and the bounded hashing queue."""

import asyncio

import aiohttp
import asyncpg

from services.auth.domain import token_hash
from tests.conftest import unique_email
from tests.events import watch_events
from tests.harness import (
    System,
    admin_login,
    bearer,
    call,
    client_from,
    login,
    loopback_address,
    register,
    running_system,
    session_changed,
)


async def _status(client: aiohttp.ClientSession, method: str, path: str, token: str) -> int:
    async with client.request(method, path, headers=bearer(token)) as response:
        return response.status


async def test_an_admins_ordinary_sign_in_has_a_users_rights(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email)
    await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
    ordinary = await login(client, email)
    assert await _status(client, "GET", "/api/admin/orders", ordinary) == 403
    status, body = await call(client, "GET", "/api/users/me", ordinary)
    assert status == 200 and body["data"]["role"] == "admin", "the account is an admin's"
    elevated = await admin_login(client, email)
    assert await _status(client, "GET", "/api/admin/orders", elevated) == 200


async def test_an_admin_session_loses_its_rights_with_the_accounts_role(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    """Should an account lose its role behind the services' back (by hand, in the database),
    its admin sessions do not keep the rights: a session's rights are the lesser of its own
    and its account's."""
    email = unique_email()
    await register(client, email)
    await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
    elevated = await admin_login(client, email)
    await admin_db.execute("UPDATE auth.users SET role = 'user' WHERE email = $1", email)
    # The token was not used yet, so no gateway holds auth's earlier answer for it.
    assert await _status(client, "GET", "/api/admin/orders", elevated) == 403


async def test_a_password_change_ends_every_other_session(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email, password="old password")
    here = await login(client, email, password="old password")
    elsewhere = [await login(client, email, password="old password") for _ in range(2)]
    for token in (here, *elsewhere):
        assert await _status(client, "GET", "/api/users/me", token) == 200

    async with watch_events("auth.session_revoked") as events:
        status, body = await call(client, "POST", "/api/users/password", here,
                                  {"currentPassword": "old password",
                                   "newPassword": "new password"})
        assert status == 200 and body["data"] == {"revoked": 2}
        revoked = await events.bodies_until(lambda bodies: len(bodies) >= 1)
    assert len(revoked[0]["data"]["sessionIds"]) == 2

    assert await _status(client, "GET", "/api/users/me", here) == 200, "the caller stays"
    for token in elsewhere:
        assert await _status(client, "GET", "/api/users/me", token) == 401
    async with client.post("/api/users/login",
                           json={"email": email, "password": "old password"}) as response:
        assert response.status == 401
    await login(client, email, password="new password")


async def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failure(
    client: aiohttp.ClientSession, system: System
) -> None:
    email = unique_email()
    await register(client, email)
    token = await login(client, email)
    other = await login(client, email)
    statuses = []
    for _ in range(5):
        status, _ = await call(client, "POST", "/api/users/password", token,
                               {"currentPassword": "guess", "newPassword": "new password"})
        statuses.append(status)
    # The shared test system allows 3 failures per account and address, as for sign-ins.
    assert statuses == [401, 401, 401, 401, 429]
    assert await _status(client, "GET", "/api/users/me", other) == 200, "nothing ended"
    async with client_from(system.gateway_url, loopback_address()) as owner:
        await login(owner, email)  # the password is still the old one


async def test_password_change_input_is_validated(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    status, body = await call(client, "POST", "/api/users/password", user_token,
                              {"currentPassword": "correct horse", "newPassword": "short"})
    assert status == 422 and body["details"][0]["field"] == "newPassword"
    async with client.post("/api/users/password", json={}) as response:
        assert response.status == 401


async def _last_used(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool, seconds_ago: float
) -> str:
    """A new session's token, as if last used `seconds_ago`."""
    return await session_changed(
        client, admin_db, "last_seen_at = now() - make_interval(secs => $2)", seconds_ago
    )


async def test_an_idle_session_ends(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool, system: System
) -> None:
    token = await _last_used(client, admin_db, system.settings["auth"].session_idle_seconds + 1)
    assert await _status(client, "GET", "/api/users/me", token) == 401
    assert await admin_db.fetchval(
        "SELECT count(*) FROM auth.sessions WHERE token_hash = $1", token_hash(token)
    ) == 0, "an ended session is deleted when it is refused"


async def test_using_a_session_keeps_it_alive(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool, system: System
) -> None:
    token = await _last_used(client, admin_db, system.settings["auth"].session_idle_seconds - 5)
    assert await _status(client, "GET", "/api/users/me", token) == 200
    seen = await admin_db.fetchval(
        "SELECT now() - last_seen_at < interval '5 seconds' FROM auth.sessions"
        " WHERE token_hash = $1", token_hash(token),
    )
    assert seen, "the use was recorded"
    status, body = await call(client, "GET", "/api/users/sessions", token)
    assert status == 200 and body["data"]["items"][0]["lastSeenAt"]


async def test_past_the_session_cap_the_least_recently_used_session_ends(
    databases, admin_db: asyncpg.Pool
) -> None:
    async with running_system(
        databases, auth={"max_sessions_per_user": 3, "session_touch_interval_seconds": 1,
                         "login_max_failures_per_account_and_address": 100},
        gateway={"token_cache_seconds": 0},
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        email = unique_email()
        await register(client, email)
        tokens = [await login(client, email) for _ in range(3)]
        await admin_db.execute(  # as if signed in a while ago
            "UPDATE auth.sessions SET last_seen_at = last_seen_at - interval '1 minute'"
            " WHERE token_hash = ANY($1::bytea[])", [token_hash(t) for t in tokens],
        )
        assert await _status(client, "GET", "/api/users/me", tokens[0]) == 200  # used: kept
        fourth = await login(client, email)
        statuses = [await _status(client, "GET", "/api/users/me", t) for t in (*tokens, fourth)]
        assert statuses == [200, 401, 200, 200], "the least recently used one went"
        _, body = await call(client, "GET", "/api/users/sessions", fourth)
        assert len(body["data"]["items"]) == 3

        await asyncio.gather(*(login(client, email) for _ in range(8)))
        live = await admin_db.fetchval(
            "SELECT count(*) FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id"
            " WHERE u.email = $1", email,
        )
        assert live == 3, "concurrent sign-ins never pass the cap"


async def test_registrations_are_throttled_per_client_address(databases) -> None:
    async with running_system(databases, auth={"registrations_per_address": 3}) as own:
        async with client_from(own.gateway_url, loopback_address()) as client:
            for _ in range(3):
                await register(client, unique_email())
            async with client.post("/api/users/register", json={
                "email": unique_email(), "password": "correct horse", "name": "Flood"
            }) as response:
                body = await response.json()
                assert response.status == 429 and body["code"] == "too_many_requests"
                assert 3000 < int(response.headers["Retry-After"]) <= 3600
        async with client_from(own.gateway_url, loopback_address()) as neighbour:
            await register(neighbour, unique_email())


async def test_hashing_past_its_queue_is_refused_at_once_and_counts_nothing(
    databases, admin_db: asyncpg.Pool
) -> None:
    """With no room to wait beyond the worker threads, a flood of sign-ins gets 503 with
    Retry-After for what does not fit, never a growing wait; the refused attempts are not
    counted against the account (its owner signs in right after)."""
    async with running_system(
        databases, auth={"password_hash_queue": 0,
                         "login_max_failures_per_account_and_address": 1000},
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        email = unique_email()
        await register(client, email)

        async def attempt() -> tuple[int, str | None]:
            async with client.post(
                "/api/users/login", json={"email": email, "password": "wrong password"}
            ) as response:
                return response.status, response.headers.get("Retry-After")

        results = await asyncio.gather(*(attempt() for _ in range(40)))
        refused = [after for status, after in results if status == 503]
        assert refused and all(after for after in refused)
        assert {status for status, _ in results} <= {401, 503}
        failures = await admin_db.fetchval(
            "SELECT failures FROM auth.login_attempts WHERE key = 'account:' || lower($1)", email
        )
        assert failures == sum(1 for status, _ in results if status == 401)
        await login(client, email)


async def test_only_a_hash_of_each_token_is_stored(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email)
    token = await login(client, email)
    rows = await admin_db.fetch(
        "SELECT s.* FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id"
        " WHERE u.email = $1", email,
    )
    assert len(rows) == 1 and rows[0]["token_hash"] == token_hash(token)
    assert token.encode() not in b"".join(str(value).encode() for value in rows[0].values())
