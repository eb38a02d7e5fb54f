"""HTTP endpoints of the auth service (contract §4, Auth), plus the gateway's validate call."""

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated

import asyncpg
from aiohttp import web
from pydantic import EmailStr, Field, StringConstraints

from services.auth import domain, queries
from services.auth.passwords import HashingBusy, Passwords
from services.auth.settings import AuthSettings
from shopkit import db, errors
from shopkit.app import POOL_KEY, identity, identity_key, require_user, settings_of
from shopkit.identity import IDENTITY_HEADER, Identity, IdentityKey, Role, sign_identity
from shopkit.openapi import Access, documented
from shopkit.outbox import add_event
from shopkit.pagination import NEWEST_FIRST, PageOf, PageQuery
from shopkit.web import ApiModel, from_row, ok, path_id, read_model, read_query, request_id

log = logging.getLogger("services.auth")

PASSWORDS_KEY = web.AppKey("passwords", Passwords)
CHECK_PATH = "/internal/sessions/check"
routes = web.RouteTableDef()
front_proxy_routes = web.RouteTableDef()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
NewPassword = Annotated[str, Field(min_length=8, max_length=128)]


class RegisterRequest(ApiModel):
    email: EmailStr
    password: NewPassword
    name: Name


class LoginRequest(ApiModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=128)


class PasswordChange(ApiModel):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: NewPassword


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
    expires_at: datetime  # when the session ends: its expiry, or its idle time, if sooner


class Session(ApiModel):
    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    user_agent: str | None
    current: bool


def _user(row: asyncpg.Record) -> User:
    return from_row(User, row)


def _client_address(request: web.Request) -> str:
    return identity(request).client_address or "unknown"


@routes.post("/api/users/register")
@documented("Create an account", Access.PUBLIC, body=RegisterRequest, answer=User, status=201,
            errors={409: "This email is already registered (`email_taken`).",
                    429: "Too many registrations from this address (`too_many_requests`)."})
async def register(request: web.Request) -> web.Response:
    body = await read_model(request, RegisterRequest)
    settings = settings_of(request.app, AuthSettings)
    pool = request.app[POOL_KEY]
    window = domain.registration_key(_client_address(request))
    async with pool.acquire() as conn:
        hits, seconds_left = await queries.count_in_window(
            conn, window, settings.registration_window_seconds
        )
    if hits > settings.registrations_per_address:
        raise errors.TooManyRequests(
            _ceil_seconds(timedelta(seconds=seconds_left)),
            "Too many registrations from this address; try again later.",
        )
    try:
        with request.app[PASSWORDS_KEY].turn():
            password_hash = await request.app[PASSWORDS_KEY].hash(body.password)
    except HashingBusy:
        async with pool.acquire() as conn:
            await queries.give_back_hit(conn, window)  # refused at once: it does not count
        raise
    try:
        async with pool.acquire() as conn:
            row = await queries.insert_user(
                conn, uuid.uuid4(), body.email, body.name, password_hash
            )
    except asyncpg.UniqueViolationError as exc:
        raise errors.Conflict("This email is already registered.", code="email_taken") from exc
    return ok(_user(row), status=201)


_SIGN_IN_ERRORS = {
    401: "Wrong email or password (`invalid_credentials`).",
    429: "Too many failed sign-ins for this account or address (`too_many_requests`).",
}


@routes.post("/api/users/login")
@documented("Sign in (a session with a user's rights, whatever the account's role)",
            Access.PUBLIC, body=LoginRequest, answer=LoginResult, errors=_SIGN_IN_ERRORS)
async def login(request: web.Request) -> web.Response:
    return await _sign_in(request, Role.USER)


@routes.post("/api/admin/login")
@documented("Sign in as an admin (a session with an admin's rights)", Access.PUBLIC,
            body=LoginRequest, answer=LoginResult, errors=_SIGN_IN_ERRORS)
async def admin_login(request: web.Request) -> web.Response:
    return await _sign_in(request, Role.ADMIN)


async def _sign_in(request: web.Request, session_role: Role) -> web.Response:
    """Opens a session with `session_role`'s rights: USER for anyone, ADMIN for admins only."""
    body = await read_model(request, LoginRequest)
    settings = settings_of(request.app, AuthSettings)
    pool = request.app[POOL_KEY]
    counters = await _count_attempt(pool, settings, body.email, _client_address(request))
    async with pool.acquire() as conn:
        user = await queries.user_by_email(conn, body.email)
    async with _hashing_turn(request, counters):
        password_ok = await request.app[PASSWORDS_KEY].verify(
            user["password_hash"] if user else None, body.password
        )
    if not password_ok or user is None or (
        session_role is Role.ADMIN and user["role"] != Role.ADMIN
    ):
        raise errors.InvalidCredentials()

    token = domain.new_token()
    async with pool.acquire() as conn, conn.transaction():
        await queries.lock_user(conn, user["id"])
        session, ended = await queries.open_session(
            conn, uuid.uuid4(), user["id"], domain.token_hash(token),
            request.headers.get("User-Agent", "")[:512] or None, session_role.value,
            settings.session_ttl_seconds, settings.max_sessions_per_user,
        )
        if ended:
            await _announce_revoked(conn, request, user["id"], ended)
        await _give_back(conn, settings, counters, success=True)
    return ok(LoginResult(token=token, expires_at=session["expires_at"], user=_user(user)))


async def _count_attempt(
    pool: db.Pool, settings: AuthSettings, email: str, address: str
) -> domain.SignInCounters:
    """Counts this attempt as failed against the account, the account from this address and
    the address (a success gives it back), or refuses it with 429 while one is locked."""
    async with pool.acquire() as conn, conn.transaction():
        counters = await queries.lock_attempt_counters(conn, email, domain.address_key(address))
        wait = counters.retry_after()
        if wait is not None:
            raise errors.TooManyRequests(_ceil_seconds(wait))
        await queries.save_attempt_counters(conn, _policies(settings).count_attempt(counters))
    return counters


async def _give_back(
    conn: asyncpg.Connection, settings: AuthSettings, counters: domain.SignInCounters,
    success: bool,
) -> None:
    """The attempt counted before the password was checked is given back (SignInPolicies.
    giving_back says how). Run in a transaction: the counters are locked first."""
    given_back, forget = _policies(settings).giving_back(counters, success)
    current = await queries.locked_counters(conn, [*given_back, *([forget] if forget else [])])
    if forget:
        await queries.forget_counter(conn, forget)
    await queries.save_attempt_counters(
        conn, [c.given_back(given_back[c.key]) for c in current if c.key in given_back]
    )


@contextlib.asynccontextmanager
async def _hashing_turn(
    request: web.Request, counters: domain.SignInCounters
) -> AsyncIterator[None]:
    """A turn to hash (passwords.turn); refused (503), the attempt already counted is given
    back, so a refusal costs the caller nothing but a retry. Only the hashing waits in the
    turn: counting and reading the account happen before it, so a turn is never held while
    waiting on the database."""
    try:
        with request.app[PASSWORDS_KEY].turn():
            yield
    except HashingBusy:
        async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
            await _give_back(conn, settings_of(request.app, AuthSettings), counters, success=False)
        raise


def _policies(settings: AuthSettings) -> domain.SignInPolicies:
    def policy(max_failures: int) -> domain.LockoutPolicy:
        return domain.LockoutPolicy(
            max_failures=max_failures,
            window=timedelta(seconds=settings.login_failure_window_seconds),
            step=timedelta(seconds=settings.login_lockout_step_seconds),
            cap=timedelta(seconds=settings.login_lockout_max_seconds),
        )

    return domain.SignInPolicies(
        account=policy(settings.login_max_failures_per_account),
        pair=policy(settings.login_max_failures_per_account_and_address),
        address=policy(settings.login_max_failures_per_address),
    )


def _ceil_seconds(wait: timedelta) -> int:
    return int(-(-wait.total_seconds() // 1))


@routes.post("/api/users/password")
@documented("Change your password; every other session of yours ends", Access.USER,
            body=PasswordChange, answer=Revoked,
            errors={401: "The current password is wrong (`invalid_credentials`).",
                    429: "Too many failed sign-ins for this account or address "
                         "(`too_many_requests`)."})
async def change_password(request: web.Request) -> web.Response:
    """A wrong current password counts as a failed sign-in, so a stolen session cannot be
    used to guess it."""
    caller = require_user(request)
    assert caller.user_id and caller.session_id
    body = await read_model(request, PasswordChange)
    settings = settings_of(request.app, AuthSettings)
    pool = request.app[POOL_KEY]
    passwords = request.app[PASSWORDS_KEY]
    async with pool.acquire() as conn:
        user = await queries.user_by_id(conn, caller.user_id)
    if user is None:
        raise errors.Unauthorized()
    counters = await _count_attempt(pool, settings, user["email"], _client_address(request))
    async with _hashing_turn(request, counters):
        current_ok = await passwords.verify(user["password_hash"], body.current_password)
        new_hash = await passwords.hash(body.new_password) if current_ok else None
    if new_hash is None:
        raise errors.InvalidCredentials("The current password is wrong.")
    async with pool.acquire() as conn, conn.transaction():
        await queries.set_password(conn, caller.user_id, new_hash)
        ended = await queries.delete_sessions_of(conn, caller.user_id, keep=caller.session_id)
        if ended:
            await _announce_revoked(conn, request, caller.user_id, ended)
        await _give_back(conn, settings, counters, success=True)
    return ok(Revoked(revoked=len(ended)))


@routes.post("/api/users/logout")
@documented("Sign out of this session", Access.USER, answer=Revoked)
async def logout(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id and caller.session_id
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        if await queries.delete_session(conn, caller.user_id, caller.session_id):
            await _announce_revoked(conn, request, caller.user_id, [caller.session_id])
    return ok(Revoked(revoked=1))


@routes.post("/api/users/logout-all")
@documented("Sign out of every session", Access.USER, answer=Revoked)
async def logout_all(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        revoked = await queries.delete_sessions_of(conn, caller.user_id)
        if revoked:
            await _announce_revoked(conn, request, caller.user_id, revoked)
    return ok(Revoked(revoked=len(revoked)))


@routes.get("/api/users/me")
@documented("The signed-in user", Access.USER, answer=User)
async def me(request: web.Request) -> web.Response:
    caller = require_user(request)
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.user_by_id(conn, caller.user_id)
    if row is None:
        raise errors.Unauthorized()
    return ok(_user(row))


@routes.get("/api/users/sessions")
@documented("Your live sessions, newest first", Access.USER, answer=PageOf[Session],
            query=PageQuery)
async def list_sessions(request: web.Request) -> web.Response:
    caller = require_user(request)
    page = read_query(request, PageQuery).page()
    after = page.after_key(NEWEST_FIRST)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.live_sessions(
            conn, caller.user_id, settings_of(request.app, AuthSettings).session_idle_seconds,
            after, page.limit + 1,
        )

    def view(r: asyncpg.Record) -> Session:
        return from_row(Session, r, current=r["id"] == caller.session_id)

    return ok(page.answer(rows, NEWEST_FIRST, view))


@routes.delete("/api/users/sessions/{session_id}")
@documented("Revoke one of your sessions", Access.USER, answer=Revoked)
async def revoke_session(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id
    session_id = path_id(request, "session_id")
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        if not await queries.delete_session(conn, caller.user_id, session_id):
            raise errors.NotFound("No such session.")
        await _announce_revoked(conn, request, caller.user_id, [session_id])
    return ok(Revoked(revoked=1))


@routes.post("/internal/sessions/validate")
@documented("Whose token is this? (the gateway's question; not routed to clients)",
            Access.PUBLIC, body=ValidateRequest, answer=Validated, tag="internal",
            errors={401: "No such session, or it has ended."})
async def validate_token(request: web.Request) -> web.Response:
    """The gateway's question: whose token is this? 401 when none, or no longer, valid."""
    body = await read_model(request, ValidateRequest)
    session = await _live_session(request, body.token)
    return ok(
        Validated(
            user_id=session["user_id"], role=session["role"], session_id=session["id"],
            expires_at=session["ends_at"],
        )
    )


async def _live_session(request: web.Request, token: str) -> asyncpg.Record:
    """The token's session; 401 when there is none, or no longer (an ended one is deleted)."""
    if not domain.looks_like_token(token):
        raise errors.Unauthorized()
    settings = settings_of(request.app, AuthSettings)
    async with request.app[POOL_KEY].acquire() as conn:
        session = await queries.live_session_by_token(
            conn, domain.token_hash(token), settings.session_idle_seconds,
            settings.session_touch_interval_seconds,
        )
        if session is None:
            raise errors.Unauthorized()
        if session["expired"]:
            await queries.delete_session(conn, session["user_id"], session["id"])
            raise errors.Unauthorized("The session has ended; sign in again.")
    return session


@front_proxy_routes.get(CHECK_PATH)
async def check_for_front_proxy(request: web.Request) -> web.Response:
    """nginx `auth_request` in place of the gateway: checks the client's bearer token, its role
    for `/api/admin/`, and answers 204 with the identity signed, for the service that
    `X-Shop-Service` names, for the original method and URI. The identity covers an empty
    body only, so it admits body-less requests alone."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise errors.Unauthorized()
    session = await _live_session(request, token.strip())
    target = request.headers.get("X-Original-URI", "/")
    if target.startswith("/api/admin/") and session["role"] != Role.ADMIN:
        raise errors.Forbidden()
    caller = Identity(
        Role(session["role"]), session["user_id"], session["id"],
        client_address=request.headers.get("X-Real-IP"),
        session_ends_at=session["ends_at"].timestamp(),
    )
    key = _front_proxy_key(request, request.headers.get("X-Shop-Service", ""))
    signed = sign_identity(caller, key, request.headers.get("X-Original-Method", "GET"), target)
    return web.Response(status=204, headers={IDENTITY_HEADER: signed})


def _front_proxy_key(request: web.Request, service: str) -> IdentityKey:
    settings = settings_of(request.app, AuthSettings)
    if service == "auth":
        return identity_key("auth", settings)
    secret = settings.front_proxy_secrets.get(service)
    if secret is None:
        raise errors.Forbidden("No identity key for that service.")
    return IdentityKey(service, secret.get_secret_value().encode())


async def _announce_revoked(
    conn: asyncpg.Connection, request: web.Request, user_id: uuid.UUID,
    session_ids: list[uuid.UUID],
) -> None:
    """Tells other components (token caches, notification streams) that these sessions are
    gone, in the transaction that deletes them."""
    await add_event(
        conn, domain.sessions_revoked(user_id, session_ids), aggregate_id=str(user_id),
        request_id=request_id(request),
    )
