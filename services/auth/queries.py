"""SQL of the auth schema. Every value is a parameter; the schema comes from the search_path."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from services.auth.domain import AttemptCounter, SignInCounters

Conn = asyncpg.Connection

_USER = "id, email, name, role, created_at"
# When a session ends: at its expiry, or once unused for the idle time ($ parameter), whichever
# comes first. Written once, for every statement that decides whether a session is alive.
_ENDS_AT = "least({s}.expires_at, {s}.last_seen_at + make_interval(secs => {idle}))"


def _ends_at(alias: str, idle: str) -> str:
    return _ENDS_AT.format(s=alias, idle=idle)


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
    return await conn.fetchrow(f"SELECT {_USER}, password_hash FROM users WHERE id = $1", user_id)


async def make_admin(conn: Conn, user_id: UUID, password_hash: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"UPDATE users SET role = 'admin', password_hash = $2 WHERE id = $1 RETURNING {_USER}",
        user_id, password_hash,
    )


async def set_password(conn: Conn, user_id: UUID, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def lock_user(conn: asyncpg.Connection, user_id: UUID) -> None:
    """Serialises, until commit, the changes to one user's sessions that must count them."""
    await conn.execute("SELECT FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)


async def open_session(
    conn: asyncpg.Connection, session_id: UUID, user_id: UUID, token_hash: bytes,
    user_agent: str | None, role: str, ttl_seconds: int, max_sessions: int,
) -> tuple[asyncpg.Record, list[UUID]]:
    """Adds a session and ends the user's least recently used ones past `max_sessions`: returns
    the new session (id, created_at, expires_at) and the ids of those ended.

    Run after lock_user in the same transaction: the statement's snapshot, taken once the lock
    is held, sees every session committed before, so concurrent sign-ins of one user count one
    after another and never leave more than `max_sessions`.
    """
    row = await conn.fetchrow(
        """
        WITH ended AS (
            DELETE FROM sessions WHERE id IN (
                SELECT id FROM sessions WHERE user_id = $2
                ORDER BY last_seen_at DESC, created_at DESC, id OFFSET $7 - 1
            ) RETURNING id
        ), opened AS (
            INSERT INTO sessions (id, user_id, token_hash, user_agent, role, expires_at)
            VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
            RETURNING id, created_at, expires_at
        )
        SELECT opened.*, ARRAY(SELECT id FROM ended) AS ended FROM opened
        """,
        session_id, user_id, token_hash, user_agent, role, ttl_seconds, max_sessions,
    )
    return row, list(row["ended"])


async def live_session_by_token(
    conn: Conn, token_hash: bytes, idle_seconds: int, touch_seconds: int
) -> asyncpg.Record | None:
    """The token's session: its user, role (admin only while both the session and the account
    are), when it ends and whether it has ended already. A live session's last use is brought
    up to now when it is older than `touch_seconds`, in the same statement."""
    return await conn.fetchrow(
        f"""
        WITH found AS (
            SELECT s.id, s.user_id, s.expires_at, s.last_seen_at,
                   CASE WHEN s.role = 'admin' AND u.role = 'admin' THEN 'admin' ELSE 'user' END
                       AS role,
                   {_ends_at("s", "$2")} AS ends_at
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.token_hash = $1
        ), touched AS (
            UPDATE sessions SET last_seen_at = now() FROM found
            WHERE sessions.id = found.id AND found.ends_at > now()
              AND found.last_seen_at < now() - make_interval(secs => $3)
            RETURNING sessions.last_seen_at
        )
        SELECT id, user_id, role, ends_at <= now() AS expired,
               least(expires_at, coalesce((SELECT last_seen_at FROM touched), last_seen_at)
                                 + make_interval(secs => $2)) AS ends_at
        FROM found
        """,
        token_hash, idle_seconds, touch_seconds,
    )


async def delete_session(conn: Conn, user_id: UUID, session_id: UUID) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id", session_id, user_id
    )
    return deleted is not None


async def delete_sessions_of(
    conn: Conn, user_id: UUID, keep: UUID | None = None
) -> list[UUID]:
    """Ends every session of the user but `keep`; returns the ids ended."""
    rows = await conn.fetch(
        "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2 RETURNING id",
        user_id, keep,
    )
    return [row["id"] for row in rows]


async def live_sessions(
    conn: Conn, user_id: UUID, idle_seconds: int, after: tuple[datetime, UUID], limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT id, created_at, expires_at, last_seen_at, user_agent FROM sessions s
        WHERE user_id = $1 AND {_ends_at("s", "$2")} > now()
          AND (created_at, id) < ($3, $4)
        ORDER BY created_at DESC, id DESC LIMIT $5
        """,
        user_id, idle_seconds, *after, limit,
    )


async def delete_expired(
    conn: asyncpg.Connection, sweep_lock: str, idle_seconds: int
) -> int | None:
    """Deletes ended sessions, stale attempt counters and past rate windows; None when another
    instance is at it.

    The transaction-level advisory lock lets one instance sweep at a time; the others skip.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", sweep_lock):
            return None
        deleted = await conn.fetch(
            f"DELETE FROM sessions s WHERE {_ends_at('s', '$1')} <= now() RETURNING id",
            idle_seconds,
        )
        await conn.execute(
            """
            DELETE FROM login_attempts
            WHERE coalesce(locked_until, window_started_at) < now() - interval '1 day'
            """
        )
        await conn.execute(
            "DELETE FROM rate_windows WHERE window_started_at < now() - interval '1 day'"
        )
        return len(deleted)


async def count_in_window(conn: Conn, key: str, window_seconds: int) -> tuple[int, float]:
    """Counts one more hit under `key` in its current fixed window (a new window once the
    last one is over): (hits in this window, seconds until it ends). One upsert, which waits
    for and reads the latest row, so concurrent hits on every instance are all counted."""
    row = await conn.fetchrow(
        """
        INSERT INTO rate_windows AS w (key, hits, window_started_at) VALUES ($1, 1, now())
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN w.window_started_at <= now() - make_interval(secs => $2)
                        THEN 1 ELSE w.hits + 1 END,
            window_started_at = CASE WHEN w.window_started_at <= now() - make_interval(secs => $2)
                                     THEN now() ELSE w.window_started_at END
        RETURNING hits,
            extract(epoch FROM w.window_started_at + make_interval(secs => $2) - now())::float8
                AS seconds_left
        """,
        key, window_seconds,
    )
    return row["hits"], row["seconds_left"]


async def lock_attempt_counters(
    conn: asyncpg.Connection, email: str, address_key: str
) -> SignInCounters:
    """Locks the counters of the account, of the account from this address, and of the
    address, for this transaction (creating missing ones), and reads them as they are now.

    One statement: the upsert locks each row (a concurrent attempt's lock waited out) and
    returns it at its latest, so a counter deleted meanwhile is simply made again. Rows are
    taken in key order, as locked_counters takes them, so two sign-ins never deadlock; the
    row locks serialise concurrent attempts on one key across every instance. The keys naming
    the account are built by Postgres' own lower(), the one the account lookup uses, so no
    spelling of an email (Unicode case variants included) reaches the account uncounted.
    """
    rows = await conn.fetch(
        """
        WITH named AS (
            SELECT 'account:' || lower($1) AS account, 'pair:' || $2 || ' ' || lower($1) AS pair
        )
        INSERT INTO login_attempts AS a (key)
        SELECT key FROM named, unnest(ARRAY[account, pair, $2]) AS key ORDER BY key
        ON CONFLICT (key) DO UPDATE SET key = excluded.key
        RETURNING a.key, a.failures, a.window_started_at, a.locked_until, now() AS now,
            CASE a.key WHEN (SELECT account FROM named) THEN 'account'
                       WHEN (SELECT pair FROM named) THEN 'pair' ELSE 'address' END AS kind
        """,
        email, address_key,
    )
    counters = {
        r["kind"]: AttemptCounter(r["key"], r["failures"], r["window_started_at"],
                                  r["locked_until"])
        for r in rows
    }
    return SignInCounters(**counters, now=rows[0]["now"])


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


async def locked_counters(conn: asyncpg.Connection, keys: Sequence[str]) -> list[AttemptCounter]:
    """Locks the counters of `keys` for this transaction and reads them as they are now. Rows
    are taken in key order, as lock_attempt_counters takes them."""
    rows = await conn.fetch(
        """
        SELECT key, failures, window_started_at, locked_until FROM login_attempts
        WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE
        """,
        sorted(keys),
    )
    return [AttemptCounter(*row) for row in rows]


async def forget_counter(conn: asyncpg.Connection, key: str) -> None:
    await conn.execute("DELETE FROM login_attempts WHERE key = $1", key)


async def give_back_hit(conn: Conn, key: str) -> None:
    """Takes back one hit counted in the current window of `key` (count_in_window)."""
    await conn.execute(
        "UPDATE rate_windows SET hits = greatest(hits - 1, 0) WHERE key = $1", key
    )
