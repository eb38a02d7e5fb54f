"""HTTP endpoints of the auth service (contract §4, Auth), plus the gateway's validate call."""

import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated

import asyncpg
from aiohttp import web
from pydantic import EmailStr, Field, StringConstraints

from services.auth import domain, queries
from services.auth.passwords import Passwords
from services.auth.settings import AuthSettings
from shopkit import errors
from shopkit.app import POOL_KEY, SETTINGS_KEY, identity, require_user
from shopkit.events import Event
from shopkit.identity import IDENTITY_HEADER, Identity, Role, sign_identity
from shopkit.openapi import Access, documented
from shopkit.outbox import add_event
from shopkit.pagination import NEWEST, PageOf, PageQuery, cursor_time, cursor_uuid, page_of
from shopkit.web import ApiModel, ok, path_id, read_model, request_id

log = logging.getLogger("services.auth")

PASSWORDS_KEY = web.AppKey("passwords", Passwords)
CHECK_PATH = "/internal/sessions/check"
routes = web.RouteTableDef()
front_proxy_routes = web.RouteTableDef()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class RegisterRequest(ApiModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)
    name: Name


class LoginRequest(ApiModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=128)


class ValidateRequest(ApiModel):
    token: str


class User(ApiModel):
    id: uuid.UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class LoginResult(ApiModel):
    token: str
    expires_at: datetime
    user: User


class Revoked(ApiModel):
    revoked: int


class Validated(ApiModel):
    user_id: uuid.UUID
    role: Role
    session_id: uuid.UUID
    expires_at: datetime


class Session(ApiModel):
    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    user_agent: str | None
    current: bool


def _user(row: asyncpg.Record) -> User:
    return User(**{field: row[field] for field in User.model_fields})


@routes.post("/api/users/register")
@documented("Create an account", Access.PUBLIC, body=RegisterRequest, answer=User, status=201,
            errors={409: "This email is already registered (`email_taken`)."})
async def register(request: web.Request) -> web.Response:
    body = await read_model(request, RegisterRequest)
    password_hash = await request.app[PASSWORDS_KEY].hash(body.password)
    try:
        row = await queries.insert_user(
            request.app[POOL_KEY], uuid.uuid4(), body.email, body.name, password_hash
        )
    except asyncpg.UniqueViolationError as exc:
        raise errors.Conflict("This email is already registered.", code="email_taken") from exc
    return ok(_user(row), status=201)


@routes.post("/api/users/login")
@documented("Sign in", Access.PUBLIC, body=LoginRequest, answer=LoginResult,
            errors={401: "Wrong email or password (`invalid_credentials`).",
            429: "Too many failed sign-ins for this account or address (`too_many_requests`)."})
async def login(request: web.Request) -> web.Response:
    return await _sign_in(request, admin_only=False)


@routes.post("/api/admin/login")
@documented("Sign in as an admin", Access.PUBLIC, body=LoginRequest, answer=LoginResult,
            errors={401: "Wrong email or password (`invalid_credentials`).",
            429: "Too many failed sign-ins for this account or address (`too_many_requests`)."})
async def admin_login(request: web.Request) -> web.Response:
    return await _sign_in(request, admin_only=True)


async def _sign_in(request: web.Request, admin_only: bool) -> web.Response:
    body = await read_model(request, LoginRequest)
    settings = request.app[SETTINGS_KEY]
    pool = request.app[POOL_KEY]
    address = domain.address_key(identity(request).client_address or "unknown")
    account = await _count_attempt(pool, settings, body.email, address)

    user = await queries.user_by_email(pool, body.email)
    password_ok = await request.app[PASSWORDS_KEY].verify(
        user["password_hash"] if user else None, body.password
    )
    if not password_ok or user is None or (admin_only and user["role"] != Role.ADMIN):
        raise errors.InvalidCredentials()

    token = domain.new_token()
    async with pool.acquire() as conn, conn.transaction():
        session = await queries.insert_session(
            conn, uuid.uuid4(), user["id"], domain.token_hash(token),
            request.headers.get("User-Agent", "")[:512] or None, settings.session_ttl_seconds,
        )
        await queries.forget_failures(
            conn, account, address, settings.login_max_failures_per_address
        )
    return ok(LoginResult(token=token, expires_at=session["expires_at"], user=_user(user)))


async def _count_attempt(
    pool: asyncpg.Pool, settings: AuthSettings, email: str, address: str
) -> str:
    """Counts this attempt against the account and the address, or refuses it with 429.
    Returns the account's key."""
    async with pool.acquire() as conn, conn.transaction():
        account, by_address, now = await queries.lock_attempt_counters(conn, email, address)
        waits = [w for c in (account, by_address) if (w := c.retry_after(now)) is not None]
        if waits:
            raise errors.TooManyRequests(_ceil_seconds(max(waits)))
        await queries.save_attempt_counters(
            conn,
            [
                account.count_attempt(
                    _policy(settings, settings.login_max_failures_per_account), now
                ),
                by_address.count_attempt(
                    _policy(settings, settings.login_max_failures_per_address), now
                ),
            ],
        )
    return account.key


def _policy(settings: AuthSettings, max_failures: int) -> domain.LockoutPolicy:
    return domain.LockoutPolicy(
        max_failures=max_failures,
        window=timedelta(seconds=settings.login_failure_window_seconds),
        step=timedelta(seconds=settings.login_lockout_step_seconds),
        cap=timedelta(seconds=settings.login_lockout_max_seconds),
    )


def _ceil_seconds(wait: timedelta) -> int:
    return int(-(-wait.total_seconds() // 1))


@routes.post("/api/users/logout")
@documented("Sign out of this session", Access.USER, answer=Revoked)
async def logout(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id and caller.session_id
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        if await queries.delete_session(conn, caller.user_id, caller.session_id):
            await _announce_revoked(conn, request, caller, [caller.session_id])
    return ok(Revoked(revoked=1))


@routes.post("/api/users/logout-all")
@documented("Sign out of every session", Access.USER, answer=Revoked)
async def logout_all(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        revoked = await queries.delete_sessions_of(conn, caller.user_id)
        if revoked:
            await _announce_revoked(conn, request, caller, revoked)
    return ok(Revoked(revoked=len(revoked)))


@routes.get("/api/users/me")
@documented("The signed-in user", Access.USER, answer=User)
async def me(request: web.Request) -> web.Response:
    caller = require_user(request)
    row = await queries.user_by_id(request.app[POOL_KEY], caller.user_id)
    if row is None:
        raise errors.Unauthorized()
    return ok(_user(row))


@routes.get("/api/users/sessions")
@documented("Your live sessions, newest first", Access.USER, answer=PageOf[Session],
            query=PageQuery)
async def list_sessions(request: web.Request) -> web.Response:
    caller = require_user(request)
    page = page_of(request)
    after = page.after_key(cursor_time, cursor_uuid, first=NEWEST)
    rows = await queries.live_sessions(request.app[POOL_KEY], caller.user_id, after, page.limit + 1)

    def view(r: asyncpg.Record) -> Session:
        return Session(
            id=r["id"], created_at=r["created_at"], expires_at=r["expires_at"],
            user_agent=r["user_agent"], current=r["id"] == caller.session_id,
        )

    return ok(page.answer(rows, lambda r: [r["created_at"].isoformat(), str(r["id"])], view))


@routes.delete("/api/users/sessions/{session_id}")
@documented("Revoke one of your sessions", Access.USER, answer=Revoked)
async def revoke_session(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id
    session_id = path_id(request, "session_id")
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        if not await queries.delete_session(conn, caller.user_id, session_id):
            raise errors.NotFound("No such session.")
        await _announce_revoked(conn, request, caller, [session_id])
    return ok(Revoked(revoked=1))


@routes.post("/internal/sessions/validate")
@documented("Whose token is this? (the gateway's question; not routed to clients)",
            Access.PUBLIC, body=ValidateRequest, answer=Validated, tag="internal",
            errors={401: "No such session, or it has expired."})
async def validate_token(request: web.Request) -> web.Response:
    """The gateway's question: whose token is this? 401 when none, or no longer, valid."""
    body = await read_model(request, ValidateRequest)
    session = await _live_session(request.app[POOL_KEY], body.token)
    return ok(
        Validated(
            user_id=session["user_id"], role=session["role"], session_id=session["id"],
            expires_at=session["expires_at"],
        )
    )


async def _live_session(pool: asyncpg.Pool, token: str) -> asyncpg.Record:
    """The token's session; 401 when there is none, or no longer (an expired one is deleted)."""
    if not domain.looks_like_token(token):
        raise errors.Unauthorized()
    session = await queries.session_by_token(pool, domain.token_hash(token))
    if session is None:
        raise errors.Unauthorized()
    if session["expired"]:
        await queries.delete_session(pool, session["user_id"], session["id"])
        raise errors.Unauthorized("The session has expired; sign in again.")
    return session


@front_proxy_routes.get(CHECK_PATH)
async def check_for_front_proxy(request: web.Request) -> web.Response:
    """nginx `auth_request` in place of the gateway: checks the client's bearer token, its role
    for `/api/admin/`, and answers 204 with the identity signed for the original method and URI.
    The identity covers an empty body only, so it admits body-less requests alone."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise errors.Unauthorized()
    session = await _live_session(request.app[POOL_KEY], token.strip())
    target = request.headers.get("X-Original-URI", "/")
    if target.startswith("/api/admin/") and session["role"] != Role.ADMIN:
        raise errors.Forbidden()
    caller = Identity(
        Role(session["role"]), session["user_id"], session["id"],
        client_address=request.headers.get("X-Real-IP"),
    )
    secret = request.app[SETTINGS_KEY].identity_secret.get_secret_value().encode()
    signed = sign_identity(caller, secret, request.headers.get("X-Original-Method", "GET"), target)
    return web.Response(status=204, headers={IDENTITY_HEADER: signed})


async def _announce_revoked(
    conn: asyncpg.Connection, request: web.Request, caller: Identity, session_ids: list[uuid.UUID]
) -> None:
    """Tells other components (notification streams end) that these sessions are gone, in the
    transaction that deletes them."""
    event = Event(
        type="auth.session_revoked",
        source="auth",
        data={"userId": str(caller.user_id), "sessionIds": [str(s) for s in session_ids]},
    )
    await add_event(conn, event, aggregate_id=str(caller.user_id), request_id=request_id(request))
