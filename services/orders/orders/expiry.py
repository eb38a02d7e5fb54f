"""The expiry of orders left `placed`: the system cancels them, so their stock goes back."""

import logging
import uuid

from services.orders.orders import queries
from services.orders.orders.domain import Move
from shopkit import db

log = logging.getLogger("services.orders")

EXPIRY_BATCH = 100


async def expire_overdue_orders(pool: db.Pool, ttl_seconds: int) -> int:
    """Cancels the orders left `placed` longer than `ttl_seconds` (Move.expiry), as any
    cancellation is made: history, event, stock given back. Returns how many it cancelled.

    Several instances may sweep at once: each move checks, under the order's lock, that the
    order is still `placed` (an order confirmed or cancelled meanwhile is left as it is), so an
    order expires once. An order that cannot be moved is logged and passed over (the next
    sweep tries it again), so it never holds up the others.
    """
    expired = 0
    passed_over: list[uuid.UUID] = []
    while True:
        async with pool.acquire() as conn:
            overdue = await queries.overdue_placed_orders(
                conn, ttl_seconds, EXPIRY_BATCH, passed_over
            )
            for order_id in overdue:
                try:
                    moved = await queries.move_order(conn, Move.expiry(order_id), None)
                except db.DATABASE_ERRORS:
                    raise  # the database went away: the next sweep starts again
                except Exception:
                    log.exception("an overdue order could not expire", extra={
                        "order_id": str(order_id)})
                    passed_over.append(order_id)
                else:
                    # Not moved: confirmed, cancelled or gone since it was read.
                    expired += moved["id"] is not None
        if len(overdue) < EXPIRY_BATCH:
            return expired
