"""SQL of orders. Every value is a parameter; the schema comes from the search_path.

Placing and moving an order are one statement each (one round trip, a transaction of its own):
the order, its items, its history, the stock, the count of open orders and the event. The
JSON they write (the event's data, the copy of the address, the items, the history entries) is
made from the shapes in orders.domain, so the statements and the API name things alike.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from services.orders.orders.domain import (
    CREATED,
    HISTORY_ENTRY,
    ITEM,
    SHIPPING_ADDRESS,
    SOURCE,
    STATUS_CHANGED,
    Move,
    Placement,
)
from services.orders.products.queries import PRODUCT
from shopkit import tracing
from shopkit.events import ORDER_CREATED, ORDER_STATUS_CHANGED
from shopkit.outbox import event_insert, event_parameters, event_written
from shopkit.sqljson import json_object

Conn = asyncpg.Connection

ORDER = "id, user_id, status, total_cents, shipping_address, note, version, created_at, updated_at"
IDEMPOTENCY_INDEX = "orders_idempotency_idx"
_ITEM_COLUMNS = ", ".join(ITEM.values())


def _event(event_type: str, order_id: UUID, request_id: str | None) -> tuple[object, ...]:
    return event_parameters(uuid.uuid4(), event_type, SOURCE, str(order_id), request_id)


# Parameters: $1 order id, $2 user, $3 address, $4 the lines' products, $5 their quantities,
# $6 note, $7 Idempotency-Key, $8 fingerprint, $9 the user's cap on open orders, $10-$15 the
# event.
_PLACE_ORDER = f"""
    WITH earlier AS (
        SELECT id FROM orders WHERE user_id = $2 AND idempotency_key = $7
    ), shipping AS (
        -- The order keeps a copy: the address may change or go later.
        SELECT {json_object("a", SHIPPING_ADDRESS)} AS address
        FROM addresses a WHERE a.id = $3 AND a.user_id = $2
    ), room AS (
        -- A user at the cap of open orders, as this snapshot sees them, is refused without
        -- locking anything (`counted` below checks the cap again, on the latest count).
        SELECT coalesce((SELECT placed FROM open_orders WHERE user_id = $2), 0) < $9 AS has_room
    ), locked AS (
        -- In id order, as every change to several products' stock locks them: two such
        -- statements never wait on each other. FOR UPDATE waits for a concurrent change of
        -- a row and then reads the row as that change left it, not as the snapshot had it.
        SELECT {PRODUCT} FROM products
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
            (SELECT jsonb_agg({json_object("w", ITEM)} ORDER BY line_no) FROM wanted w) AS items
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
        RETURNING {ORDER}
    ), written_items AS (
        INSERT INTO order_items (order_id, line_no, {_ITEM_COLUMNS})
        SELECT placed.id, w.line_no, {", ".join("w." + c for c in ITEM.values())}
        FROM placed, wanted w
    ), history AS (
        INSERT INTO order_history (order_id, version, status, changed_by, changed_at)
        SELECT id, version, status, user_id, created_at FROM placed
    ), event AS ({event_insert(
        10, gate="(SELECT placed.*, admitted.items FROM placed, admitted) AS created",
        data=json_object("created", CREATED), occurred_at="created.created_at",
    )})
    SELECT placed.*, admitted.items, (SELECT id FROM earlier) AS earlier,
        EXISTS (SELECT FROM shipping) AS address_found,
        NOT (SELECT has_room FROM room)
            OR EXISTS (SELECT FROM go) AND NOT EXISTS (SELECT FROM counted) AS too_many_open,
        CASE WHEN go.placed_at IS NULL THEN ARRAY(SELECT p FROM locked p) END AS products
    FROM (SELECT) AS always LEFT JOIN go ON true LEFT JOIN admitted ON true
        LEFT JOIN placed ON true
"""


async def place_order(
    conn: Conn, placement: Placement, request_id: str | None
) -> asyncpg.Record:
    """Places the order in one statement: locks the lines' products, prices each line at its
    product's price as the lock shows it, and takes the stock, writing the order, its items,
    its first history entry and its order.created event.

    Nothing is written unless the placement's conditions hold (domain.Placement), checked on
    the locked rows at their latest: so the stock can never go below what was ordered, on any
    number of instances (the CHECK on the column is the last line), and an order is priced at
    the prices current when it took the stock.

    Returns the order's row and its `items` (shaped as domain.ITEM). When nothing was written,
    its `id` is None and the rest says why: `earlier`, the order this key placed;
    `address_found`; `too_many_open`; and `products`, the lines' products as locked, each a
    tuple of PRODUCT's columns (those of domain.StockedProduct). A concurrent request with the
    same Idempotency-Key makes it raise UniqueViolationError on IDEMPOTENCY_INDEX.
    """
    lines = placement.lines
    # The statement is the transaction: its span is the one the event's row names (the
    # event's publish is its child), its statement's span the asyncpg instrumentation's.
    with tracing.span("transaction place order"):
        row = await conn.fetchrow(
            _PLACE_ORDER,
            placement.order_id, placement.user_id, placement.address_id,
            [line.product_id for line in lines], [line.quantity for line in lines],
            placement.note, placement.idempotency_key, placement.fingerprint,
            placement.max_open, *_event(ORDER_CREATED, placement.order_id, request_id),
        )
    if row["id"] is not None:
        event_written(conn)
    return row


# Parameters: $1 order id, $2 the new status, $3 the statuses it may be reached from, $4 the
# history note, $5 the caller (NULL: the system), $6 whether the caller may move others'
# orders, $7 whether the move gives the order's stock back, $8-$13 the event.
_MOVE_ORDER = f"""
    WITH current AS (
        -- Locked until commit: changes of one order happen one after another. FOR UPDATE
        -- waits for a concurrent change and reads the row as that change left it; every value
        -- written below is reckoned from this row, not from the statement's older snapshot.
        SELECT {ORDER} FROM orders WHERE id = $1 FOR UPDATE
    ), visible AS (
        SELECT * FROM current WHERE $6 OR user_id = $5
    ), moved AS (
        UPDATE orders SET status = $2, version = v.version + 1, updated_at = clock_timestamp()
        FROM visible v
        WHERE orders.id = v.id AND v.status = ANY($3::text[])
        RETURNING {", ".join("orders." + c for c in ORDER.split(", "))},
            v.status AS previous, $4::text AS change_note
    ), history AS (
        INSERT INTO order_history (order_id, version, status, note, changed_by)
        SELECT id, version, status, change_note, $5 FROM moved
        RETURNING {json_object("order_history", HISTORY_ENTRY)} AS entry
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
    ), event AS ({event_insert(
        8, gate="moved", data=json_object("moved", STATUS_CHANGED), occurred_at="moved.updated_at",
    )})
    SELECT visible.status AS current_status, moved.*, history.entry,
        (SELECT jsonb_agg({json_object("i", ITEM)} ORDER BY line_no)
         FROM order_items i WHERE i.order_id = moved.id) AS items,
        (SELECT jsonb_agg({json_object("h", HISTORY_ENTRY)} ORDER BY version)
         FROM order_history h WHERE h.order_id = moved.id) AS earlier_history
    FROM (SELECT) AS always LEFT JOIN visible ON true LEFT JOIN moved ON true
        LEFT JOIN history ON true
"""


async def move_order(conn: Conn, move: Move, request_id: str | None) -> asyncpg.Record:
    """Makes the move if the order is now in one of `move.allowed_from` and its maker may move
    it: the order's new status and version, its history entry, its order.status_changed event,
    its owner's count of open orders and, if the move gives stock back, its lines' stock, in
    one statement.

    Returns `current_status`: None when the order does not exist or is not the caller's.
    When it moved, the order's row as it now is, its `items` and its history: the
    `earlier_history` entries (as the statement's snapshot has them) and the new `entry`.
    """
    with tracing.span("transaction move order"):  # as in place_order
        row = await conn.fetchrow(
            _MOVE_ORDER, move.order_id, move.to, list(move.allowed_from), move.note, move.by,
            move.any_owner, move.gives_stock_back,
            *_event(ORDER_STATUS_CHANGED, move.order_id, request_id),
        )
    if row["id"] is not None:
        event_written(conn)
    return row


async def order_by_key(conn: Conn, user_id: UUID, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        SELECT {ORDER}, request_fingerprint FROM orders
        WHERE user_id = $1 AND idempotency_key = $2
        """,
        user_id, key,
    )


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
    return await conn.fetchrow(f"SELECT {ORDER} FROM orders WHERE id = $1", order_id)


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
    SELECT {ORDER} FROM orders
    WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
      AND (created_at, id) < ($3, $4)
    ORDER BY created_at DESC, id DESC LIMIT $5
"""
_ALL_ORDERS = f"""
    SELECT {ORDER} FROM orders
    WHERE ($1::text IS NULL OR status = $1)
      AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC LIMIT $4
"""


async def items_of(conn: Conn, order_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT order_id, {_ITEM_COLUMNS} FROM order_items
        WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no
        """,
        list(order_ids),
    )


async def history_of(conn: Conn, order_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT order_id, {", ".join(HISTORY_ENTRY.values())} FROM order_history
        WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, version
        """,
        list(order_ids),
    )
