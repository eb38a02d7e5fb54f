"""SQL of the tracking schema. Every value is a parameter; the schema comes from the search_path."""

from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

import asyncpg

from services.tracking.domain import StatusFollowed

Conn = asyncpg.Connection

_TRACKING = (
    "order_id, user_id, status, version, carrier, tracking_number, estimated_delivery"
)


def _order_lock_key(order_id: str) -> str:
    """The advisory lock key of an order, as SQL over `order_id` (a column or a parameter, never
    a value): written once, so the statements that must exclude each other take the same."""
    return f"hashtextextended('tracking:' || {order_id}::text, 0)"


async def lock_order(conn: Conn, order_id: UUID) -> None:
    """Events and admin updates of one order are applied one at a time, on every instance."""
    await conn.execute(f"SELECT pg_advisory_xact_lock({_order_lock_key('$1::uuid')})", order_id)


async def follow_statuses(conn: Conn, statuses: Sequence[StatusFollowed]) -> None:
    """For each order, creates the tracking or moves its status to the newest version given,
    unless it already holds that version or a newer one (events may arrive twice or out of
    order), and adds each status to the timeline.

    One statement, one round trip, for any number of events. The orders' locks (as lock_order
    takes them) come first, in key order, so two such statements never wait on each other
    and admin updates of an order still wait for it or it for them. Neither write reads a
    snapshot that the wait could leave stale: ON CONFLICT checks the latest committed row.
    An upsert may touch a row once per statement, hence one row per order (its newest).
    """
    await conn.execute(
        f"""
        WITH given AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[],
                                 $6::timestamptz[])
                AS g(order_id, user_id, version, status, note, occurred_at)
        ), locked AS (
            SELECT count(pg_advisory_xact_lock(key)) FROM (
                SELECT DISTINCT {_order_lock_key("order_id")} AS key
                FROM given ORDER BY key
            ) AS keys
        ), followed AS (
            INSERT INTO trackings (order_id, user_id, status, version)
            SELECT DISTINCT ON (order_id) order_id, user_id, status, version
            FROM given, locked ORDER BY order_id, version DESC
            ON CONFLICT (order_id) DO UPDATE SET
                status = excluded.status, version = excluded.version, updated_at = now()
            WHERE trackings.version < excluded.version
        )
        INSERT INTO timeline (order_id, version, status, note, occurred_at)
        SELECT order_id, version, status, note, occurred_at FROM given, locked
        ON CONFLICT (order_id, version) DO NOTHING
        """,
        [s.order_id for s in statuses], [s.user_id for s in statuses],
        [s.version for s in statuses], [s.status for s in statuses],
        [s.note for s in statuses], [s.occurred_at for s in statuses],
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
