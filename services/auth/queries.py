"""SQL of the auth schema. Every value is a parameter; the schema comes from the search_path."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from services.auth.domain import AttemptCounter

Conn = asyncpg.Connection | asyncpg.Pool

_USER = "id, email, name, role, created_at"


async def insert_user(
    conn: Conn, user_id: UUID, email: str, name: str, password_hash: str, role: str = "user"
) -> asyncpg.Record:
    """Raises UniqueViolationError when the email (in any case) is taken."""
    return await conn.fetchrow(
        f"""
        INSERT INTO users (id, email, name, password_hash, role)
        VALUES ($1, $2, $3, $4, $5) RETURNING {_USER}
        """,
        user_id, email, name, password_hash, role,
    )


async def user_by_email(conn: Conn, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_USER}, password_hash FROM users WHERE lower(email) = lower($1)", email
    )


async def user_by_id(conn: Conn, user_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_USER} FROM users WHERE id = $1", user_id)


async def make_admin(conn: Conn, user_id: UUID, password_hash: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"UPDATE users SET role = 'admin', password_hash = $2 WHERE id = $1 RETURNING {_USER}",
        user_id, password_hash,
    )


async def insert_session(
    conn: Conn, session_id: UUID, user_id: UUID, token_hash: bytes, user_agent: str | None,
    ttl_seconds: int,
) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO sessions (id, user_id, token_hash, user_agent, expires_at)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
        RETURNING id, created_at, expires_at
        """,
        session_id, user_id, token_hash, user_agent, ttl_seconds,
    )


async def session_by_token(conn: Conn, token_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT s.id, s.user_id, s.expires_at, s.expires_at <= now() AS expired, u.role
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.token_hash = $1
        """,
        token_hash,
    )


async def delete_session(conn: Conn, user_id: UUID, session_id: UUID) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id", session_id, user_id
    )
    return deleted is not None


async def delete_sessions_of(conn: Conn, user_id: UUID) -> list[UUID]:
    rows = await conn.fetch("DELETE FROM sessions WHERE user_id = $1 RETURNING id", user_id)
    return [row["id"] for row in rows]


async def live_sessions(
    conn: Conn, user_id: UUID, after: tuple[datetime, UUID], limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT id, created_at, expires_at, user_agent FROM sessions
        WHERE user_id = $1 AND expires_at > now()
          AND (created_at, id) < ($2, $3)
        ORDER BY created_at DESC, id DESC LIMIT $4
        """,
        user_id, *after, limit,
    )


async def delete_expired(conn: asyncpg.Connection, sweep_lock: str) -> int | None:
    """Deletes expired sessions and stale attempt counters; None when another instance is at it.

    The transaction-level advisory lock lets one instance sweep at a time; the others skip.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", sweep_lock):
            return None
        deleted = await conn.fetch("DELETE FROM sessions WHERE expires_at <= now() RETURNING id")
        await conn.execute(
            """
            DELETE FROM login_attempts
            WHERE coalesce(locked_until, window_started_at) < now() - interval '1 day'
            """
        )
        return len(deleted)


async def lock_attempt_counters(
    conn: asyncpg.Connection, email: str, address_key: str
) -> tuple[AttemptCounter, AttemptCounter, datetime]:
    """Locks the account's and the address's counters for this transaction (creating missing
    ones) and reads them: (account, address, now).

    The account key is built by Postgres' own lower(), the one the account lookup uses, so no
    spelling of an email (Unicode case variants included) reaches the account uncounted. Keys
    are locked in sorted order so two sign-ins never deadlock; the row locks serialise
    concurrent attempts on one key across every instance.
    """
    rows = await conn.fetch(
        """
        WITH wanted AS (SELECT unnest(ARRAY['account:' || lower($1), $2]) AS key ORDER BY 1),
        created AS (
            INSERT INTO login_attempts (key) SELECT key FROM wanted ON CONFLICT DO NOTHING
        )
        SELECT key, key = 'account:' || lower($1) AS is_account, now() AS now
        FROM wanted
        """,
        email, address_key,
    )
    account_key = next(r["key"] for r in rows if r["is_account"])
    locked = await conn.fetch(
        """
        SELECT key, failures, window_started_at, locked_until FROM login_attempts
        WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE
        """,
        [r["key"] for r in rows],
    )
    counters = {
        r["key"]: AttemptCounter(r["key"], r["failures"], r["window_started_at"], r["locked_until"])
        for r in locked
    }
    return counters[account_key], counters[address_key], rows[0]["now"]


async def save_attempt_counters(
    conn: asyncpg.Connection, counters: Sequence[AttemptCounter]
) -> None:
    await conn.executemany(
        """
        UPDATE login_attempts SET failures = $2, window_started_at = $3, locked_until = $4
        WHERE key = $1
        """,
        [(c.key, c.failures, c.window_started_at, c.locked_until) for c in counters],
    )


async def forget_failures(
    conn: Conn, account_key: str, address_key: str, address_limit: int
) -> None:
    """After a success: the account starts afresh; the address gets back the attempt it spent
    (and loses the lock that attempt set, if it was the one that passed the limit)."""
    await conn.execute("DELETE FROM login_attempts WHERE key = $1", account_key)
    await conn.execute(
        """
        UPDATE login_attempts
        SET failures = greatest(failures - 1, 0),
            locked_until = CASE WHEN failures - 1 <= $2 THEN NULL ELSE locked_until END
        WHERE key = $1
        """,
        address_key, address_limit,
    )
