"""SQL of the orders schema. Every value is a parameter; the schema comes from the search_path."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.orders.domain import OrderItem
from shopkit.outbox import event_insert, event_written

Conn = asyncpg.Connection

ADDRESS_FIELDS = ("label", "recipient", "line1", "line2", "city", "postal_code", "country", "phone")
_ADDRESS = "id, " + ", ".join(ADDRESS_FIELDS) + ", is_default, created_at, seq"
_PRODUCT = "id, sku, name, price_cents, stock"
_ORDER = "id, user_id, status, total_cents, shipping_address, note, version, created_at, updated_at"


# Addresses ---------------------------------------------------------------------------------


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


# Products and stock ------------------------------------------------------------------------


async def list_products(conn: Conn, after_sku: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {_PRODUCT} FROM products WHERE sku > $1
        ORDER BY sku LIMIT $2
        """,
        after_sku, limit,
    )


async def product(conn: Conn, product_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_PRODUCT} FROM products WHERE id = $1", product_id)


async def insert_product(
    conn: Conn, product_id: UUID, sku: str, name: str, price_cents: int, stock: int
) -> asyncpg.Record:
    """Raises UniqueViolationError when the SKU is taken."""
    return await conn.fetchrow(
        f"""
        INSERT INTO products (id, sku, name, price_cents, stock) VALUES ($1, $2, $3, $4, $5)
        RETURNING {_PRODUCT}
        """,
        product_id, sku, name, price_cents, stock,
    )


async def update_product(
    conn: Conn, product_id: UUID, name: str | None, price_cents: int | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        UPDATE products SET name = coalesce($2, name), price_cents = coalesce($3, price_cents),
            updated_at = now()
        WHERE id = $1 RETURNING {_PRODUCT}
        """,
        product_id, name, price_cents,
    )


async def adjust_stock(
    conn: Conn, product_id: UUID, delta: int, ceiling: int
) -> asyncpg.Record | None:
    """One conditional statement: the row lock it takes makes concurrent adjustments (and
    orders) queue on the row, and the condition is re-checked on the latest stock."""
    return await conn.fetchrow(
        f"""
        UPDATE products SET stock = stock + $2, updated_at = now()
        WHERE id = $1 AND stock + $2 BETWEEN 0 AND $3 RETURNING {_PRODUCT}
        """,
        product_id, delta, ceiling,
    )


async def lock_products(conn: Conn, product_ids: Sequence[UUID]) -> None:
    """Locks the products' rows until commit, always in id order.

    Every transaction that changes several products' stock locks them first, in the same order
    (cancellations here, orders in record_order), so two of them can never wait on each other
    (no deadlock).
    """
    await conn.execute(
        "SELECT FROM products WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(product_ids),
    )


async def move_stock(conn: Conn, deltas: dict[UUID, int]) -> None:
    """Adds each delta to its product's stock; call with the rows locked by lock_products."""
    await conn.execute(
        """
        UPDATE products SET stock = stock + d.delta, updated_at = now()
        FROM unnest($1::uuid[], $2::int[]) AS d(id, delta)
        WHERE products.id = d.id AND products.id = ANY($1::uuid[])  -- through the index
        """,
        list(deltas), list(deltas.values()),
    )


# Orders ------------------------------------------------------------------------------------


async def placement_inputs(
    conn: Conn, user_id: UUID, address_id: UUID, product_ids: Sequence[UUID], key: str | None
) -> asyncpg.Record:
    """All that placing an order reads, in one round trip: `address` (None unless it is the
    user's) and `products` (those of product_ids that exist), as whole table rows; `earlier`,
    the id of the order an earlier request with this Idempotency-Key made, or None; and `now`,
    the database's clock, which dates the order and its event."""
    return await conn.fetchrow(
        """
        SELECT (SELECT a FROM addresses a WHERE a.id = $2 AND a.user_id = $1) AS address,
            ARRAY(SELECT p FROM products p WHERE p.id = ANY($3::uuid[])) AS products,
            (SELECT id FROM orders WHERE user_id = $1 AND idempotency_key = $4) AS earlier,
            clock_timestamp() AS now
        """,
        user_id, address_id, list(product_ids), key,
    )


async def order_by_key(conn: Conn, user_id: UUID, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        SELECT {_ORDER}, request_fingerprint FROM orders
        WHERE user_id = $1 AND idempotency_key = $2
        """,
        user_id, key,
    )


IDEMPOTENCY_INDEX = "orders_idempotency_idx"

# Parameters: $1 order id, $2 user, $3 total, $4 address, $5 note, $6 key, $7 fingerprint,
# $8-$13 the lines' columns, $14 the time it is placed, $15-$19 the event.
_RECORD_ORDER = f"""
    WITH wanted AS (
        SELECT * FROM unnest($9::uuid[], $13::int[]) AS w(product_id, quantity)
    ), locked AS (
        -- In id order, as every change to several products' stock locks them: two such
        -- statements never wait on each other. FOR UPDATE waits for a concurrent change of
        -- a row and then reads the row as that change left it, not as the snapshot had it.
        SELECT id, stock FROM products WHERE id = ANY($9::uuid[]) ORDER BY id FOR UPDATE
    ), enough AS (
        SELECT count(*) = cardinality($9::uuid[]) AS ok FROM wanted
        JOIN locked ON locked.id = wanted.product_id AND locked.stock >= wanted.quantity
    ), taken AS (
        UPDATE products SET stock = stock - w.quantity, updated_at = now()
        FROM wanted w, enough
        WHERE enough.ok AND products.id = w.product_id
          AND products.id = ANY($9::uuid[])  -- through the index, for any number of lines
    ), placed AS (
        INSERT INTO orders (id, user_id, status, total_cents, shipping_address, note,
                            idempotency_key, request_fingerprint, created_at, updated_at)
        SELECT $1, $2, 'placed', $3, $4, $5, $6, $7, $14, $14 FROM enough WHERE enough.ok
        RETURNING {_ORDER}
    ), lines AS (
        INSERT INTO order_items (order_id, line_no, product_id, sku, name,
                                 unit_price_cents, quantity)
        SELECT placed.id, l.* FROM placed,
            unnest($8::int[], $9::uuid[], $10::text[], $11::text[], $12::int[], $13::int[])
            AS l(line_no, product_id, sku, name, unit_price_cents, quantity)
    ), history AS (
        INSERT INTO order_history (order_id, version, status, changed_by, changed_at)
        SELECT id, version, status, user_id, created_at FROM placed
    ), event AS ({event_insert(15, gate="placed")})
    SELECT placed.*, (SELECT jsonb_object_agg(id, stock) FROM locked) AS stock_now
    FROM enough LEFT JOIN placed ON true
"""


async def record_order(
    conn: Conn, order_id: UUID, user_id: UUID, total: int, address: dict[str, Any],
    note: str | None, key: str | None, fingerprint: bytes, items: Sequence[OrderItem],
    placed_at: datetime, event: tuple[Any, ...],
) -> asyncpg.Record:
    """Places the order, in one statement and so in one transaction of its own: takes the
    items' stock, writes the order, its items, its first history entry and its event (the
    `event_parameters`).

    The stock is checked again here, on the products' rows locked and at their latest, and
    nothing is written unless every line is still in stock: between the caller's read and
    this statement another order may have taken it. So the stock can never go below what
    was ordered, on any number of instances (the CHECK on the column is the last line).

    Returns the order's row; when a line fell short its `id` is None and `stock_now` holds
    each product's stock as the locks showed it. A concurrent request with the same
    Idempotency-Key makes it raise UniqueViolationError on IDEMPOTENCY_INDEX.
    """
    lines = list(enumerate(items, start=1))
    row = await conn.fetchrow(
        _RECORD_ORDER,
        order_id, user_id, total, address, note, key, fingerprint,
        [n for n, _ in lines], [i.product_id for _, i in lines], [i.sku for _, i in lines],
        [i.name for _, i in lines], [i.unit_price_cents for _, i in lines],
        [i.quantity for _, i in lines], placed_at, *event,
    )
    if row["id"] is not None:
        event_written(conn)
    return row


async def insert_history(
    conn: Conn, order_id: UUID, version: int, status: str, note: str | None, changed_by: UUID
) -> None:
    await conn.execute(
        """
        INSERT INTO order_history (order_id, version, status, note, changed_by)
        VALUES ($1, $2, $3, $4, $5)
        """,
        order_id, version, status, note, changed_by,
    )


async def order_for_update(conn: Conn, order_id: UUID) -> asyncpg.Record | None:
    """The order, locked until commit: status changes of one order happen one after another."""
    return await conn.fetchrow(f"SELECT {_ORDER} FROM orders WHERE id = $1 FOR UPDATE", order_id)


async def set_status(conn: Conn, order_id: UUID, status: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        UPDATE orders SET status = $2, version = version + 1, updated_at = clock_timestamp()
        WHERE id = $1 RETURNING {_ORDER}
        """,
        order_id, status,
    )


async def order(conn: Conn, order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_ORDER} FROM orders WHERE id = $1", order_id)


async def list_orders(
    conn: Conn,
    user_id: UUID | None,
    status: str | None,
    after: tuple[datetime, UUID],
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first, from the cursor on. One statement per shape (one user's, everyone's), each
    matching its index, because statements are planned once for all parameters."""
    return await conn.fetch(
        _ORDERS_OF_USER if user_id is not None else _ALL_ORDERS,
        *(() if user_id is None else (user_id,)), status, *after, limit,
    )


_ORDERS_OF_USER = f"""
    SELECT {_ORDER} FROM orders
    WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
      AND (created_at, id) < ($3, $4)
    ORDER BY created_at DESC, id DESC LIMIT $5
"""
_ALL_ORDERS = f"""
    SELECT {_ORDER} FROM orders
    WHERE ($1::text IS NULL OR status = $1)
      AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC LIMIT $4
"""


async def items_of(conn: Conn, order_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT order_id, product_id, sku, name, unit_price_cents, quantity FROM order_items
        WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no
        """,
        list(order_ids),
    )


async def history_of(conn: Conn, order_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT order_id, status, note, changed_by, changed_at FROM order_history
        WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, version
        """,
        list(order_ids),
    )
