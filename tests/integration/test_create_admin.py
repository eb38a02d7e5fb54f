"""`python -m services.auth create-admin EMAIL` creates an admin or promotes an account."""

import asyncio
import os
import sys

import aiohttp

from shopkit.bootstrap import ServiceDatabase
from tests.conftest import unique_email
from tests.harness import (
    IDENTITY_SECRETS,
    bearer,
    component_rabbitmq_url,
    eventually,
    login,
    register,
)


async def _create_admin(
    databases: dict[str, ServiceDatabase], email: str, password: str | None
) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": databases["auth"].dsn,
        "IDENTITY_SECRET": IDENTITY_SECRETS["auth"],
        "RABBITMQ_URL": component_rabbitmq_url("auth"),
    }
    env.pop("ADMIN_PASSWORD", None)
    if password is not None:
        env["ADMIN_PASSWORD"] = password
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.auth", "create-admin", email,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def _admin_login(client: aiohttp.ClientSession, email: str, password: str) -> int:
    async with client.post(
        "/api/admin/login", json={"email": email, "password": password}
    ) as response:
        return response.status


async def test_create_admin_creates_then_promotes(databases, client) -> None:
    email = unique_email()
    code, output = await _create_admin(databases, email, "admin password 1")
    assert code == 0 and "created" in output, output
    assert await _admin_login(client, email, "admin password 1") == 200

    user_email = unique_email()
    await register(client, user_email, password="user password")
    assert await _admin_login(client, user_email, "user password") == 401
    code, output = await _create_admin(databases, user_email.upper(), "new admin password")
    assert code == 0 and "promoted" in output, output
    assert await _admin_login(client, user_email, "new admin password") == 200
    assert await _admin_login(client, user_email, "user password") == 401


async def test_a_promotion_ends_every_session_the_account_had(databases, client) -> None:
    """The contract's §2: a session opened before the promotion (with a user's rights) does
    not become an admin's; it ends, on every gateway instance, and the admin signs in again."""
    email = unique_email()
    await register(client, email, password="user password")
    before = await login(client, email, password="user password")
    code, output = await _create_admin(databases, email, "admin password 2")
    assert code == 0 and "promoted" in output, output

    async def refused() -> bool:
        async with client.get("/api/admin/orders", headers=bearer(before)) as response:
            return response.status == 401

    await eventually(refused, deadline_seconds=10)
    async with client.get("/api/users/me", headers=bearer(before)) as response:
        assert response.status == 401


async def test_create_admin_refuses_bad_input(databases) -> None:
    code, output = await _create_admin(databases, unique_email(), None)
    assert code == 2 and "ADMIN_PASSWORD" in output
    code, output = await _create_admin(databases, unique_email(), "short")
    assert code == 2 and "password" in output
    code, output = await _create_admin(databases, "not-an-email", "long enough password")
    assert code == 2 and "email" in output
