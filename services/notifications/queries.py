"""SQL of the notifications schema. Every value is a parameter; the schema comes from the
search_path."""

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

import asyncpg

from services.notifications.domain import Message
from shopkit import tracing

Conn = asyncpg.Connection

# NOTIFY channels: what the hubs of every instance hear. A notice carries ids only,
# "<user id>:<row id>": a hub reads the row from its own table, for that user, so a notice
# that no real row answers (any database role can NOTIFY any channel) changes nothing.
NEW_NOTIFICATION_CHANNEL = "notifications_new"
SESSIONS_REVOKED_CHANNEL = "notifications_sessions_revoked"
_NOTIFICATION = "id, user_id, type, title, body, order_id, created_at, read_at"


async def add(
    conn: Conn, user_id: UUID, order_id: UUID | None, message: Message, event_id: UUID
) -> None:
    """Adds the event's notification, unless the event already made one, and tells every
    instance's stream hub which it is.

    One statement: run on its own, it is its own transaction, and the NOTIFY goes out at its
    commit, only if the row was added. One user's notifications are added one at a time (a
    lock per user, held to the commit, taken before the row and its `created_at` are made),
    so their order by `created_at` is the order they were committed in: a stream resuming
    after the last one its client saw (notifications_after) misses none committed later.

    Traced, it runs in a span of its own, whose traceparent the row keeps for its SSE send.
    """
    with tracing.span("create notification"):
        await conn.execute(
            f"""
            WITH added AS (
                INSERT INTO notifications (id, user_id, type, title, body, order_id,
                                           source_event_id, traceparent)
                SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::uuid, $7::uuid,
                    $9::text
                FROM (SELECT pg_advisory_xact_lock(
                          hashtextextended('notify:' || $2::uuid::text, 0))) AS one_at_a_time
                ON CONFLICT (source_event_id) DO NOTHING RETURNING {_NOTIFICATION}
            )
            SELECT pg_notify($8, user_id || ':' || id) FROM added
            """,
            uuid4(), user_id, message.type, message.title, message.body,
            order_id, event_id, NEW_NOTIFICATION_CHANNEL, tracing.traceparent(),
        )


async def notifications_by_id(
    conn: Conn, wanted: Sequence[tuple[UUID, UUID]]
) -> list[asyncpg.Record]:
    """The notifications named by (user id, notification id) pairs that exist as named, each
    with the traceparent of its creation."""
    return await conn.fetch(
        f"""
        SELECT {_NOTIFICATION}, traceparent FROM notifications
        WHERE (user_id, id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
        """,
        [user for user, _ in wanted], [notification for _, notification in wanted],
    )


async def notifications_after(
    conn: Conn, user_id: UUID, anchor: UUID, limit: int
) -> list[asyncpg.Record]:
    """The user's notifications created after `anchor` (one of theirs), oldest first, each
    with the traceparent of its creation; none when `anchor` is not theirs."""
    return await conn.fetch(
        f"""
        SELECT {_NOTIFICATION}, traceparent FROM notifications
        WHERE user_id = $1 AND (created_at, id) > (
            SELECT created_at, id FROM notifications WHERE id = $2 AND user_id = $1
        )
        ORDER BY created_at, id LIMIT $3
        """,
        user_id, anchor, limit,
    )


async def record_revoked(
    conn: Conn, event_id: UUID, user_id: UUID, session_ids: Sequence[UUID]
) -> None:
    """Records the sessions an auth.session_revoked event ended, and tells every instance's
    hub its id, at commit (so the hubs read committed rows)."""
    await conn.execute(
        """
        INSERT INTO revoked_sessions (event_id, session_id, user_id)
        SELECT $1, unnest($3::uuid[]), $2 ON CONFLICT DO NOTHING
        """,
        event_id, user_id, list(session_ids),
    )
    await conn.execute(
        "SELECT pg_notify($1, $2::uuid::text || ':' || $3::uuid::text)",
        SESSIONS_REVOKED_CHANNEL, user_id, event_id,
    )


async def revoked_sessions(
    conn: Conn, wanted: Sequence[tuple[UUID, UUID]]
) -> list[asyncpg.Record]:
    """(user_id, session_id) of the sessions revoked by the events named by (user id, event
    id) pairs, as recorded."""
    return await conn.fetch(
        """
        SELECT user_id, session_id FROM revoked_sessions
        WHERE (user_id, event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
        """,
        [user for user, _ in wanted], [event for _, event in wanted],
    )


async def prune_revoked(conn: Conn) -> None:
    """A revocation matters to the streams open when it arrives only: older ones can go."""
    await conn.execute("DELETE FROM revoked_sessions WHERE revoked_at < now() - interval '1 day'")


class StreamAdmission(StrEnum):
    OPENED = "opened"
    FULL = "full"  # the user has as many streams open as allowed
    REVOKED = "revoked"  # the session was revoked while the request came through


async def open_stream(
    conn: asyncpg.Connection, stream_id: UUID, user_id: UUID, session_id: UUID | None,
    instance_id: UUID, lease_seconds: float, max_per_user: int,
) -> StreamAdmission:
    """Records a stream of the user's, unless they have `max_per_user` open already (streams
    whose lease ran out do not count, and go) or its session has been revoked (after the
    gateway checked it, before this stream could hear of it).

    Two statements in one transaction: the user's lock first, so that the count, whose
    snapshot is taken after the lock is held, sees every stream committed before; concurrent
    opens of one user then count one after another, on every instance.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('streams:' || $1::uuid::text, 0))",
            user_id,
        )
        return StreamAdmission(await conn.fetchval(
            """
            WITH stale AS (
                DELETE FROM open_streams WHERE user_id = $2 AND lease_ends_at <= now()
            ), revoked AS (
                SELECT EXISTS (SELECT FROM revoked_sessions WHERE session_id = $6) AS revoked
            ), opened AS (
                INSERT INTO open_streams (id, user_id, instance_id, lease_ends_at)
                SELECT $1, $2, $3, now() + make_interval(secs => $4)
                WHERE NOT (SELECT revoked FROM revoked)
                  AND (SELECT count(*) FROM open_streams
                       WHERE user_id = $2 AND lease_ends_at > now()) < $5
                RETURNING id
            )
            SELECT CASE WHEN EXISTS (SELECT FROM opened) THEN 'opened'
                        WHEN (SELECT revoked FROM revoked) THEN 'revoked' ELSE 'full' END
            """,
            stream_id, user_id, instance_id, lease_seconds, max_per_user, session_id,
        ))


async def close_stream(conn: Conn, stream_id: UUID) -> None:
    await conn.execute("DELETE FROM open_streams WHERE id = $1", stream_id)


async def close_streams_of(conn: Conn, instance_id: UUID) -> None:
    await conn.execute("DELETE FROM open_streams WHERE instance_id = $1", instance_id)


async def renew_streams(
    conn: Conn, instance_id: UUID, open_ids: Sequence[UUID], lease_seconds: float
) -> None:
    """Renews the leases of the instance's streams open now, and forgets its others (streams
    that ended while the database could not be told)."""
    await conn.execute(
        """
        WITH renewed AS (
            UPDATE open_streams SET lease_ends_at = now() + make_interval(secs => $3)
            WHERE instance_id = $1 AND id = ANY($2::uuid[])
        )
        DELETE FROM open_streams WHERE instance_id = $1 AND NOT id = ANY($2::uuid[])
        """,
        instance_id, list(open_ids), lease_seconds,
    )


async def page(
    conn: Conn, user_id: UUID, unread_only: bool, after: tuple[datetime, UUID],
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {_NOTIFICATION} FROM notifications
        WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)
          AND (created_at, id) < ($3, $4)
        ORDER BY created_at DESC, id DESC LIMIT $5
        """,
        user_id, unread_only, *after, limit,
    )


async def unread_count(conn: Conn, user_id: UUID) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL", user_id
    )


async def mark_read(conn: Conn, user_id: UUID, notification_id: UUID) -> asyncpg.Record | None:
    """Marks one read (keeping the first read time); None when it is not the user's."""
    return await conn.fetchrow(
        f"""
        UPDATE notifications SET read_at = coalesce(read_at, now())
        WHERE id = $1 AND user_id = $2 RETURNING {_NOTIFICATION}
        """,
        notification_id, user_id,
    )


async def mark_all_read(conn: Conn, user_id: UUID) -> int:
    status = await conn.execute(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL", user_id
    )
    return int(status.split()[-1])
