"""`python -m services.auth create-admin EMAIL`, the password taken from ADMIN_PASSWORD."""

import asyncio
import os
import uuid

import asyncpg
from pydantic import ValidationError

from services.auth import domain, queries
from services.auth.app import MIGRATIONS, NAME
from services.auth.passwords import Passwords
from services.auth.routes import RegisterRequest
from services.auth.settings import AuthSettings
from shopkit import db
from shopkit.migrations import apply_migrations
from shopkit.outbox import add_event


async def create_admin(settings: AuthSettings, email: str, password: str, name: str) -> str:
    """Creates the admin, or promotes the existing account and sets its password.

    Returns "created" or "promoted". Validated by the same rules as registration. A promotion
    ends every session the account had (and says so to every component, through the outbox,
    as a sign-out does): its role and password are no longer those the sessions began with.
    """
    request = RegisterRequest(email=email, password=password, name=name)
    passwords = Passwords(settings)
    conn = await db.connect_when_ready(settings, NAME)
    try:
        await apply_migrations(conn, NAME, MIGRATIONS)
        password_hash = await passwords.hash(request.password)
        async with conn.transaction():
            existing = await queries.user_by_email(conn, request.email)
            if existing is not None:
                await queries.make_admin(conn, existing["id"], password_hash)
                ended = await queries.delete_sessions_of(conn, existing["id"])
                if ended:
                    await add_event(
                        conn, domain.sessions_revoked(existing["id"], ended),
                        aggregate_id=str(existing["id"]), request_id=None,
                    )
                return "promoted"
            await queries.insert_user(
                conn, uuid.uuid4(), request.email, request.name, password_hash, role="admin"
            )
            return "created"
    finally:
        await conn.close()
        passwords.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "create-admin":
        print("usage: python -m services.auth create-admin EMAIL  (password in ADMIN_PASSWORD)")
        return 2
    password = os.environ.get("ADMIN_PASSWORD")
    if not password:
        print("ADMIN_PASSWORD must hold the admin's password (8 to 128 characters).")
        return 2
    try:
        outcome = asyncio.run(
            create_admin(AuthSettings(), argv[1], password, os.environ.get("ADMIN_NAME", "Admin"))
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"refused: {problems}")
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"database error: {type(exc).__name__}: {exc}")
        return 1
    print(f"admin {argv[1]} {outcome}")
    return 0
