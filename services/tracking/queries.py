"""SQL of the tracking schema. Every value is a parameter; the schema comes from the search_path."""

from datetime import date, datetime
from uuid import UUID

import asyncpg

Conn = asyncpg.Connection

_TRACKING = (
    "order_id, user_id, status, version, carrier, tracking_number, estimated_delivery"
)


def _lock_key(order_id: UUID) -> str:
    return f"tracking:{order_id}"


async def lock_order(conn: Conn, order_id: UUID) -> None:
    """Events and admin updates of one order are applied one at a time, on every instance."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _lock_key(order_id))


async def follow_status(
    conn: Conn, order_id: UUID, user_id: UUID, version: int, status: str, note: str | None,
    occurred_at: datetime,
) -> None:
    """Creates the tracking or moves its status, unless it already holds this version or a
    newer one (events may arrive twice or out of order), and adds the status to the timeline.

    One statement, one round trip: the order's lock (as lock_order takes it) comes first, so
    admin updates of the order still wait for it or it for them. Neither write reads a
    snapshot that the wait could leave stale: ON CONFLICT checks the latest committed row.
    """
    await conn.execute(
        """
        WITH locked AS (
            SELECT pg_advisory_xact_lock(hashtextextended($7, 0))
        ), followed AS (
            INSERT INTO trackings (order_id, user_id, status, version)
            SELECT $1, $2, $4, $3 FROM locked
            ON CONFLICT (order_id) DO UPDATE SET
                status = excluded.status, version = excluded.version, updated_at = now()
            WHERE trackings.version < excluded.version
        )
        INSERT INTO timeline (order_id, version, status, note, occurred_at)
        SELECT $1, $3, $4, $5, $6 FROM locked
        ON CONFLICT (order_id, version) DO NOTHING
        """,
        order_id, user_id, version, status, note, occurred_at, _lock_key(order_id),
    )


async def tracking(conn: Conn, order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_TRACKING} FROM trackings WHERE order_id = $1", order_id)


async def timeline(conn: Conn, order_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT status, note, location, occurred_at FROM timeline
        WHERE order_id = $1 ORDER BY occurred_at, id
        """,
        order_id,
    )


async def set_delivery_details(
    conn: Conn, order_id: UUID, carrier: str | None, tracking_number: str | None,
    estimated_delivery: date | None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        UPDATE trackings SET carrier = coalesce($2, carrier),
            tracking_number = coalesce($3, tracking_number),
            estimated_delivery = coalesce($4, estimated_delivery), updated_at = now()
        WHERE order_id = $1 RETURNING {_TRACKING}
        """,
        order_id, carrier, tracking_number, estimated_delivery,
    )


async def add_checkpoint(
    conn: Conn, order_id: UUID, status: str, location: str, note: str | None
) -> datetime:
    return await conn.fetchval(
        """
        INSERT INTO timeline (order_id, status, note, location, occurred_at)
        VALUES ($1, $2, $3, $4, clock_timestamp()) RETURNING occurred_at
        """,
        order_id, status, note, location,
    )
