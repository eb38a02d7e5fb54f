"""How tracking follows the orders service's events (consumed through the kit's Consumer)."""

from uuid import UUID

import asyncpg
from pydantic import Field

from services.tracking import queries
from shopkit.consumer import EventData, EventHandler, IncomingEvent, Subscription

QUEUE = "tracking.orders"


class OrderCreated(EventData):
    order_id: UUID
    user_id: UUID
    status: str = Field(min_length=1)
    version: int = Field(ge=1)


class OrderStatusChanged(EventData):
    order_id: UUID
    user_id: UUID
    to: str = Field(min_length=1)
    note: str | None = None
    version: int = Field(ge=1)


async def on_order_created(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    data: OrderCreated = event.data
    await queries.follow_status(
        conn, data.order_id, data.user_id, data.version, data.status, "Order placed",
        event.occurred_at,
    )


async def on_status_changed(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    """Also handles a change that arrives before the order.created it follows: the tracking is
    created from it, and the placed entry joins the timeline (by time) when it comes."""
    data: OrderStatusChanged = event.data
    await queries.follow_status(
        conn, data.order_id, data.user_id, data.version, data.to, data.note, event.occurred_at
    )


SUBSCRIPTION = Subscription(
    QUEUE,
    {
        # follow_status is one statement, and the version it checks makes a repeat a no-op.
        "order.created": EventHandler(OrderCreated, on_order_created, deduplicates_itself=True),
        "order.status_changed": EventHandler(
            OrderStatusChanged, on_status_changed, deduplicates_itself=True
        ),
    },
)
