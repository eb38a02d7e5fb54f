"""SQL of the notifications schema. Every value is a parameter; the schema comes from the
search_path."""

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from services.notifications.domain import Message

Conn = asyncpg.Connection

NEW_NOTIFICATION_CHANNEL = "notifications_new"
SESSIONS_REVOKED_CHANNEL = "notifications_sessions_revoked"
_NOTIFICATION = "id, user_id, type, title, body, order_id, created_at, read_at"


async def add(
    conn: Conn, user_id: UUID, order_id: UUID | None, message: Message, event_id: UUID
) -> None:
    """Adds the event's notification, unless the event already made one, and tells every
    instance's stream hub of it with the new row as JSON (the hub builds the client's view).

    One statement: run on its own, it is its own transaction, and the NOTIFY goes out at its
    commit, only if the row was added.
    """
    await conn.execute(
        f"""
        WITH added AS (
            INSERT INTO notifications (id, user_id, type, title, body, order_id, source_event_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (source_event_id) DO NOTHING RETURNING {_NOTIFICATION}
        )
        SELECT pg_notify($8, row_to_json(added)::text) FROM added
        """,
        uuid4(), user_id, message.type, message.title, message.body,
        order_id, event_id, NEW_NOTIFICATION_CHANNEL,
    )


async def announce(conn: Conn, channel: str, payload: dict[str, Any]) -> None:
    """Tells every instance's stream hub, at commit and only if the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2::jsonb::text)", channel, payload)


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
