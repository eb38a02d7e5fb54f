"""The contract's Auth section, through the gateway, against the real Postgres."""

import asyncio
import statistics
import time

import aiohttp
import asyncpg

from services.auth.domain import token_hash
from tests.conftest import unique_email
from tests.harness import bearer, login, register, running_system, session_changed


async def test_register_login_me_logout_round_trip(client: aiohttp.ClientSession) -> None:
    email = unique_email()
    user = await register(client, email, name="Ann Example")
    assert user["email"] == email and user["name"] == "Ann Example" and user["role"] == "user"
    assert set(user) == {"id", "email", "name", "role", "createdAt"}

    async with client.post(
        "/api/users/login", json={"email": email.upper(), "password": "correct horse"}
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["success"] is True
    token = body["data"]["token"]
    assert body["data"]["user"] == user and body["data"]["expiresAt"].endswith("Z")

    async with client.get("/api/users/me", headers=bearer(token)) as response:
        assert response.status == 200
        assert (await response.json())["data"] == user

    async with client.post("/api/users/logout", headers=bearer(token)) as response:
        assert response.status == 200
    async with client.get("/api/users/me", headers=bearer(token)) as response:
        assert response.status == 401
        body = await response.json()
    assert body["success"] is False and body["code"] == "unauthorized" and body["requestId"]


async def test_register_rejects_an_email_taken_in_any_case(client: aiohttp.ClientSession) -> None:
    email = unique_email()
    await register(client, email)
    async with client.post(
        "/api/users/register",
        json={"email": email.upper(), "password": "another pass", "name": "Bob"},
    ) as response:
        assert response.status == 409
        assert (await response.json())["code"] == "email_taken"


async def test_parallel_registrations_of_one_email_create_one_account(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()

    async def attempt(i: int) -> int:
        variant = email.upper() if i % 2 else email
        payload = {"email": variant, "password": "correct horse", "name": f"N{i}"}
        async with client.post("/api/users/register", json=payload) as response:
            return response.status

    statuses = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sorted(statuses) == [201] + [409] * 7
    count = await admin_db.fetchval(
        "SELECT count(*) FROM auth.users WHERE lower(email) = lower($1)", email
    )
    assert count == 1


async def test_validation_errors_name_each_field_and_create_nothing(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    payload = {"email": "not-an-email", "password": "short", "name": "   "}
    async with client.post("/api/users/register", json=payload) as response:
        assert response.status == 422
        body = await response.json()
    assert body["code"] == "validation_error" and body["success"] is False
    assert {d["field"] for d in body["details"]} == {"email", "password", "name"}
    assert all(d["message"] for d in body["details"])
    assert await admin_db.fetchval(
        "SELECT count(*) FROM auth.users WHERE email = 'not-an-email'"
    ) == 0

    too_long = {"email": unique_email(), "password": "x" * 129, "name": "n" * 101}
    async with client.post("/api/users/register", json=too_long) as response:
        assert response.status == 422
        fields = {d["field"] for d in (await response.json())["details"]}
    assert fields == {"password", "name"}

    async with client.post("/api/users/register", json=["not", "an", "object"]) as response:
        assert response.status == 422


async def test_invalid_json_is_400(client: aiohttp.ClientSession) -> None:
    for raw in (b"{not json", b""):
        async with client.post(
            "/api/users/register", data=raw, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["code"] == "invalid_json"


async def _login_failure(client: aiohttp.ClientSession, email: str) -> tuple[int, dict, float]:
    started = time.perf_counter()
    async with client.post(
        "/api/users/login", json={"email": email, "password": "wrong password"}
    ) as response:
        body = await response.json()
        return response.status, body, time.perf_counter() - started


async def test_wrong_password_and_unknown_email_are_indistinguishable(databases) -> None:
    # A system of its own with generous limits, so six failures per account are not throttled.
    async with running_system(
        databases, auth={"login_max_failures_per_account_and_address": 100}
    ) as own, aiohttp.ClientSession(base_url=own.gateway_url) as client:
        known = unique_email()
        await register(client, known)
        wrong, unknown = [], []
        for _ in range(6):
            wrong.append(await _login_failure(client, known))
            unknown.append(await _login_failure(client, unique_email()))

    for status, body, _ in wrong + unknown:
        assert status == 401
        assert {k: v for k, v in body.items() if k != "requestId"} == {
            "success": False,
            "error": "Wrong email or password.",
            "code": "invalid_credentials",
        }
    # Both paths run argon2: skipping it for unknown emails would make them ~10x faster.
    ratio = statistics.median(t for *_, t in unknown) / statistics.median(t for *_, t in wrong)
    assert 0.33 < ratio < 3, ratio


async def test_expired_session_is_refused_and_deleted(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    token = await session_changed(client, admin_db, "expires_at = now() - interval '1 second'")
    async with client.get("/api/users/me", headers=bearer(token)) as response:
        assert response.status == 401
        assert (await response.json())["code"] == "unauthorized"
    remaining = await admin_db.fetchval(
        "SELECT count(*) FROM auth.sessions WHERE token_hash = $1", token_hash(token)
    )
    assert remaining == 0


async def test_sessions_list_revoke_and_logout_all(client: aiohttp.ClientSession) -> None:
    email = unique_email()
    await register(client, email)
    first = await login(client, email, **{"User-Agent": "phone/1.0"})
    second = await login(client, email, **{"User-Agent": "laptop/2.0"})
    third = await login(client, email)

    async with client.get("/api/users/sessions", headers=bearer(second)) as response:
        assert response.status == 200
        listing = (await response.json())["data"]
    assert listing["nextCursor"] is None
    sessions = listing["items"]
    assert len(sessions) == 3
    assert [s["current"] for s in sessions].count(True) == 1
    current = next(s for s in sessions if s["current"])
    assert current["userAgent"] == "laptop/2.0"
    assert set(current) == {"id", "createdAt", "expiresAt", "lastSeenAt", "userAgent", "current"}
    phone = next(s for s in sessions if s["userAgent"] == "phone/1.0")

    async with client.delete(f"/api/users/sessions/{phone['id']}", headers=bearer(second)) as r:
        assert r.status == 200
    async with client.get("/api/users/me", headers=bearer(first)) as response:
        assert response.status == 401
    async with client.delete(f"/api/users/sessions/{phone['id']}", headers=bearer(second)) as r:
        assert r.status == 404

    async with client.post("/api/users/logout-all", headers=bearer(third)) as response:
        assert response.status == 200
        assert (await response.json())["data"] == {"revoked": 2}
    for token in (second, third):
        async with client.get("/api/users/me", headers=bearer(token)) as response:
            assert response.status == 401


async def test_another_users_session_cannot_be_revoked(client: aiohttp.ClientSession) -> None:
    alice, bob = unique_email(), unique_email()
    await register(client, alice)
    await register(client, bob)
    alice_token = await login(client, alice)
    bob_token = await login(client, bob)
    async with client.get("/api/users/sessions", headers=bearer(bob_token)) as response:
        bob_session = (await response.json())["data"]["items"][0]["id"]

    for session_id in (bob_session, "not-a-uuid"):
        async with client.delete(
            f"/api/users/sessions/{session_id}", headers=bearer(alice_token)
        ) as response:
            assert response.status == 404
            assert (await response.json())["code"] == "not_found"
    async with client.get("/api/users/me", headers=bearer(bob_token)) as response:
        assert response.status == 200


async def test_admin_login_refuses_non_admins_and_admits_admins(
    client: aiohttp.ClientSession, admin_db: asyncpg.Pool
) -> None:
    email = unique_email()
    await register(client, email)
    async with client.post(
        "/api/admin/login", json={"email": email, "password": "correct horse"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["code"] == "invalid_credentials"

    await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
    async with client.post(
        "/api/admin/login", json={"email": email, "password": "correct horse"}
    ) as response:
        assert response.status == 200
        assert (await response.json())["data"]["user"]["role"] == "admin"


async def test_admin_routes_are_forbidden_to_users_and_closed_to_strangers(
    client: aiohttp.ClientSession,
) -> None:
    email = unique_email()
    await register(client, email)
    token = await login(client, email)
    for method, path in [
        ("GET", "/api/admin/orders"),
        ("POST", "/api/admin/products"),
        ("POST", "/api/admin/orders/00000000-0000-0000-0000-000000000000/tracking"),
        ("GET", "/api/admin/anything"),
    ]:
        async with client.request(method, path, headers=bearer(token)) as response:
            assert response.status == 403, path
            assert (await response.json())["code"] == "forbidden"
        async with client.request(method, path) as response:
            assert response.status == 401, path
