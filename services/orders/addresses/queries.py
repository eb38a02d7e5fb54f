"""SQL of addresses. Every value is a parameter; the schema comes from the search_path."""

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.orders.addresses.domain import ADDRESS_FIELDS

Conn = asyncpg.Connection

_ADDRESS = "id, " + ", ".join(ADDRESS_FIELDS) + ", is_default, created_at, seq"


async def lock_addresses_of(conn: Conn, user_id: UUID) -> None:
    """Serialises every change to one user's addresses, on every instance, until commit.

    Moving the default is two steps (clear the old, set the new); the partial unique index
    forbids two defaults but cannot prevent zero. Taking this lock first makes each change see
    the result of the previous one, so the user always has exactly one default.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"addr:{user_id}")


async def list_addresses(
    conn: Conn, user_id: UUID, after: tuple[datetime, int], limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {_ADDRESS} FROM addresses
        WHERE user_id = $1
          AND (created_at, seq) < ($2, $3)
        ORDER BY created_at DESC, seq DESC LIMIT $4
        """,
        user_id, *after, limit,
    )


async def has_addresses(conn: Conn, user_id: UUID) -> bool:
    return await conn.fetchval("SELECT exists(SELECT 1 FROM addresses WHERE user_id = $1)", user_id)


async def address_of(conn: Conn, user_id: UUID, address_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_ADDRESS} FROM addresses WHERE id = $1 AND user_id = $2", address_id, user_id
    )


async def insert_address(
    conn: Conn, address_id: UUID, user_id: UUID, fields: dict[str, Any], is_default: bool
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        INSERT INTO addresses (id, user_id, {", ".join(ADDRESS_FIELDS)}, is_default)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_ADDRESS}
        """,
        address_id, user_id, *(fields[name] for name in ADDRESS_FIELDS), is_default,
    )


async def update_address(
    conn: Conn, address_id: UUID, fields: dict[str, Any]
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        UPDATE addresses SET label = $2, recipient = $3, line1 = $4, line2 = $5, city = $6,
            postal_code = $7, country = $8, phone = $9
        WHERE id = $1 RETURNING {_ADDRESS}
        """,
        address_id, *(fields[name] for name in ADDRESS_FIELDS),
    )


async def move_default(conn: Conn, user_id: UUID, address_id: UUID) -> asyncpg.Record:
    await conn.execute(
        "UPDATE addresses SET is_default = false WHERE user_id = $1 AND is_default AND id <> $2",
        user_id, address_id,
    )
    return await conn.fetchrow(
        f"UPDATE addresses SET is_default = true WHERE id = $1 RETURNING {_ADDRESS}", address_id
    )


async def delete_address(conn: Conn, user_id: UUID, address_id: UUID) -> bool | None:
    """Deletes the address; returns whether it was the default, None when there was none."""
    return await conn.fetchval(
        "DELETE FROM addresses WHERE id = $1 AND user_id = $2 RETURNING is_default",
        address_id, user_id,
    )


async def promote_newest(conn: Conn, user_id: UUID) -> None:
    await conn.execute(
        """
        UPDATE addresses SET is_default = true WHERE id = (
            SELECT id FROM addresses WHERE user_id = $1
            ORDER BY created_at DESC, seq DESC LIMIT 1
        )
        """,
        user_id,
    )


