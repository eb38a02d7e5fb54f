"""SQL of the orders schema. Every value is a parameter; the schema comes from the search_path."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.orders.domain import Line
from shopkit.outbox import event_insert, event_written, occurred_at
from shopkit.web import api_name

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


# Orders ------------------------------------------------------------------------------------


async def order_by_key(conn: Conn, user_id: UUID, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        SELECT {_ORDER}, request_fingerprint FROM orders
        WHERE user_id = $1 AND idempotency_key = $2
        """,
        user_id, key,
    )


IDEMPOTENCY_INDEX = "orders_idempotency_idx"
_ITEM_COLUMNS = ("product_id", "sku", "name", "unit_price_cents", "quantity")
_HISTORY_COLUMNS = ("status", "note", "changed_by", "changed_at")


def _api_object(row: str, columns: Sequence[str]) -> str:
    """SQL for the JSON object of a row's columns, named as the API names them."""
    pairs = ", ".join(f"'{api_name(column)}', {row}.{column}" for column in columns)
    return f"jsonb_build_object({pairs})"


# What order.created carries that only the statement knows: the time the order was placed,
# the lines as priced under the locks, and their total.
_CREATED_COMPLETION = f"""jsonb_build_object(
    'occurredAt', {occurred_at("placed_at")},
    'data', jsonb_build_object('totalCents', total, 'items', items))"""

# Parameters: $1 order id, $2 user, $3 address, $4 the lines' products, $5 their quantities,
# $6 note, $7 Idempotency-Key, $8 fingerprint, $9 the user's cap on open orders, $10-$14 the
# event.
_PLACE_ORDER = f"""
    WITH earlier AS (
        SELECT id FROM orders WHERE user_id = $2 AND idempotency_key = $7
    ), shipping AS (
        -- The order keeps a copy: the address may change or go later.
        SELECT {_api_object("a", ("id", *ADDRESS_FIELDS))} AS address
        FROM addresses a WHERE a.id = $3 AND a.user_id = $2
    ), room AS (
        -- A user at the cap of open orders, as this snapshot sees them, is refused without
        -- locking anything (`counted` below checks the cap again, on the latest count).
        SELECT coalesce((SELECT placed FROM open_orders WHERE user_id = $2), 0) < $9 AS has_room
    ), locked AS (
        -- In id order, as every change to several products' stock locks them: two such
        -- statements never wait on each other. FOR UPDATE waits for a concurrent change of
        -- a row and then reads the row as that change left it, not as the snapshot had it.
        SELECT {_PRODUCT} FROM products
        WHERE id = ANY($4::uuid[]) AND (SELECT has_room FROM room) ORDER BY id FOR UPDATE
    ), wanted AS (
        -- The lines that are in stock, priced as the locked rows are now.
        SELECT l.line_no::int, l.product_id, p.sku, p.name, p.price_cents AS unit_price_cents,
            l.quantity, p.stock - l.quantity AS stock_left
        FROM unnest($4::uuid[], $5::int[]) WITH ORDINALITY AS l(product_id, quantity, line_no)
        JOIN locked p ON p.id = l.product_id AND p.stock >= l.quantity
    ), go AS (
        -- One row when the order is placed: the address is the user's, the key is new, and
        -- every line is in stock. Dated by the database's clock, the one clock every
        -- instance shares, so consumers can order the event with times taken elsewhere
        -- (tracking's checkpoints).
        SELECT shipping.address, statement_timestamp() AS placed_at,
            (SELECT sum(unit_price_cents::bigint * quantity) FROM wanted) AS total,
            (SELECT jsonb_agg({_api_object("w", _ITEM_COLUMNS)} ORDER BY line_no)
             FROM wanted w) AS items
        FROM shipping
        WHERE NOT EXISTS (SELECT FROM earlier)
          AND (SELECT count(*) FROM wanted) = cardinality($4::uuid[])
    ), counted AS (
        -- One more open order for the user, unless they have $9 already. ON CONFLICT waits
        -- for a concurrent placement's lock on the row and then reads the row as it left it
        -- (not as this statement's snapshot had it), so concurrent placements count one
        -- after another, on any number of instances. It runs after the products are locked
        -- (it needs `go`), as cancellations take the same locks: products, then this row.
        INSERT INTO open_orders AS o (user_id, placed) SELECT $2, 1 FROM go
        ON CONFLICT (user_id) DO UPDATE SET placed = o.placed + 1 WHERE o.placed < $9
        RETURNING placed
    ), admitted AS (
        SELECT go.* FROM go, counted
    ), taken AS (
        -- The stock left is reckoned from the locked row, not as `stock - quantity`: the
        -- CHECK on the column is tested on the row as this statement's snapshot had it, before
        -- the update moves to the latest version, so a stock given back since (a cancellation
        -- committed while this statement waited for the lock) failed it.
        UPDATE products SET stock = w.stock_left, updated_at = now()
        FROM wanted w, admitted
        WHERE products.id = w.product_id
          AND products.id = ANY($4::uuid[])  -- through the index, for any number of lines
    ), placed AS (
        INSERT INTO orders (id, user_id, status, total_cents, shipping_address, note,
                            idempotency_key, request_fingerprint, created_at, updated_at)
        SELECT $1, $2, 'placed', total, address, $6, $7, $8, placed_at, placed_at FROM admitted
        RETURNING {_ORDER}
    ), written_items AS (
        INSERT INTO order_items (order_id, line_no, {", ".join(_ITEM_COLUMNS)})
        SELECT placed.id, w.line_no, {", ".join("w." + c for c in _ITEM_COLUMNS)}
        FROM placed, wanted w
    ), history AS (
        INSERT INTO order_history (order_id, version, status, changed_by, changed_at)
        SELECT id, version, status, user_id, created_at FROM placed
    ), event AS ({event_insert(10, gate="admitted", completion=_CREATED_COMPLETION)})
    SELECT placed.*, admitted.items, (SELECT id FROM earlier) AS earlier,
        EXISTS (SELECT FROM shipping) AS address_found,
        NOT (SELECT has_room FROM room)
            OR EXISTS (SELECT FROM go) AND NOT EXISTS (SELECT FROM counted) AS too_many_open,
        CASE WHEN go.placed_at IS NULL THEN ARRAY(SELECT p FROM locked p) END AS products
    FROM (SELECT) AS always LEFT JOIN go ON true LEFT JOIN admitted ON true
        LEFT JOIN placed ON true
"""


async def place_order(
    conn: Conn, order_id: UUID, user_id: UUID, address_id: UUID, lines: Sequence[Line],
    note: str | None, key: str | None, fingerprint: bytes, max_open: int,
    event: tuple[Any, ...],
) -> asyncpg.Record:
    """Places the order in one statement, and so in one transaction of its own: locks the
    lines' products, prices each line at its product's price as the lock shows it, and takes
    the stock, writing the order, its items, its first history entry and its event (the
    `event_parameters`, completed with the time, the items and the total).

    Nothing is written unless the address is the user's, no order was placed with this
    Idempotency-Key, the user has fewer than `max_open` orders in `placed` (counted in
    open_orders, raised here), and every line is in stock on the locked rows, at their latest:
    so the stock can never go below what was ordered, on any number of instances (the CHECK on
    the column is the last line), and an order is priced at the prices current when it took
    the stock.

    Returns the order's row and its `items` (as the API writes them). When nothing was
    written, its `id` is None and the rest says why: `earlier`, the order this key placed;
    `address_found`; `too_many_open`; and `products`, the lines' products as locked, each a
    tuple of
    `_PRODUCT`'s columns (those of domain.StockedProduct). A concurrent request with
    the same Idempotency-Key makes it raise UniqueViolationError on IDEMPOTENCY_INDEX.
    """
    row = await conn.fetchrow(
        _PLACE_ORDER,
        order_id, user_id, address_id, [line.product_id for line in lines],
        [line.quantity for line in lines], note, key, fingerprint, max_open, *event,
    )
    if row["id"] is not None:
        event_written(conn)
    return row


# What order.status_changed carries that only the statement knows: the order's owner, the
# status it came from and its new version, as read under the order's lock, and the time of
# the change.
_MOVED_COMPLETION = f"""jsonb_build_object(
    'occurredAt', {occurred_at("updated_at")},
    'data', jsonb_build_object('userId', user_id, 'from', previous, 'version', version))"""

# Parameters: $1 order id, $2 the new status, $3 the statuses it may be reached from, $4 the
# history note, $5 the caller (NULL: the system), $6 whether the caller may move others'
# orders, $7 whether the move gives the order's stock back, $8-$12 the event.
_MOVE_ORDER = f"""
    WITH current AS (
        -- Locked until commit: changes of one order happen one after another. FOR UPDATE
        -- waits for a concurrent change and reads the row as that change left it; every value
        -- written below is reckoned from this row, not from the statement's older snapshot.
        SELECT {_ORDER} FROM orders WHERE id = $1 FOR UPDATE
    ), visible AS (
        SELECT * FROM current WHERE $6 OR user_id = $5
    ), moved AS (
        UPDATE orders SET status = $2, version = v.version + 1, updated_at = clock_timestamp()
        FROM visible v
        WHERE orders.id = v.id AND v.status = ANY($3::text[])
        RETURNING {", ".join("orders." + c for c in _ORDER.split(", "))}, v.status AS previous
    ), history AS (
        INSERT INTO order_history (order_id, version, status, note, changed_by)
        SELECT id, version, status, $4, $5 FROM moved
        RETURNING {_api_object("order_history", _HISTORY_COLUMNS)} AS entry
    ), lines AS (
        SELECT product_id, sum(quantity) AS quantity FROM order_items
        WHERE order_id = $1 AND $7 AND EXISTS (SELECT FROM moved)
        GROUP BY product_id
    ), locked AS (
        -- A move that gives the stock back (a cancellation) locks the products in id order,
        -- as every change to several products' stock locks them (place_order): no deadlock.
        SELECT id, stock FROM products WHERE id IN (SELECT product_id FROM lines)
        ORDER BY id FOR UPDATE
    ), given_back AS (
        UPDATE products SET stock = l.stock + lines.quantity, updated_at = now()
        FROM locked l JOIN lines ON lines.product_id = l.id
        WHERE products.id = l.id
    ), released AS (
        -- An order leaving `placed` is one open order fewer for its owner. The condition on
        -- `locked` makes this wait for the products' locks first: placing takes the same two
        -- kinds of lock in that order (products, then this row), so the two never deadlock.
        -- Never below 0: orders placed before this count existed (or by an instance of an
        -- earlier version, during a rolling update) were never counted in.
        UPDATE open_orders SET placed = greatest(open_orders.placed - 1, 0)
        FROM moved
        WHERE open_orders.user_id = moved.user_id AND moved.previous = 'placed'
          AND (SELECT count(*) FROM locked) >= 0
    ), event AS ({event_insert(8, gate="moved", completion=_MOVED_COMPLETION)})
    SELECT visible.status AS current_status, moved.*, history.entry,
        (SELECT jsonb_agg({_api_object("i", _ITEM_COLUMNS)} ORDER BY line_no)
         FROM order_items i WHERE i.order_id = moved.id) AS items,
        (SELECT jsonb_agg({_api_object("h", _HISTORY_COLUMNS)} ORDER BY version)
         FROM order_history h WHERE h.order_id = moved.id) AS earlier_history
    FROM (SELECT) AS always LEFT JOIN visible ON true LEFT JOIN moved ON true
        LEFT JOIN history ON true
"""


async def move_order(
    conn: Conn, order_id: UUID, status: str, reachable_from: Sequence[str], note: str | None,
    caller: UUID | None, any_owner: bool, gives_stock_back: bool, event: tuple[Any, ...],
) -> asyncpg.Record:
    """Moves the order to `status` if it is now in `reachable_from` and the caller (None: the
    system) may move it: its new version, its history entry, its event, its owner's count of
    open orders and, if `gives_stock_back`, its lines' stock given back, in one statement
    (one round trip, its own transaction).

    Returns `current_status`: None when the order does not exist or is not the caller's.
    When it moved, the order's row as it now is, its `items` and its history: the
    `earlier_history` entries (as the statement's snapshot has them) and the new `entry`.
    """
    row = await conn.fetchrow(
        _MOVE_ORDER, order_id, status, list(reachable_from), note, caller, any_owner,
        gives_stock_back, *event,
    )
    if row["id"] is not None:
        event_written(conn)
    return row


async def overdue_placed_orders(
    conn: Conn, ttl_seconds: int, limit: int, passed_over: Sequence[UUID] = ()
) -> list[UUID]:
    """Orders still `placed` `ttl_seconds` after they were placed, oldest first, but those
    `passed_over`."""
    rows = await conn.fetch(
        """
        SELECT id FROM orders
        WHERE status = 'placed' AND created_at < now() - make_interval(secs => $1)
          AND NOT id = ANY($3::uuid[])
        ORDER BY created_at LIMIT $2
        """,
        ttl_seconds, limit, list(passed_over),
    )
    return [row["id"] for row in rows]


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
