"""How tracking follows the orders service's events (consumed through the kit's Consumer)."""

from uuid import UUID

import asyncpg
from pydantic import Field

from services.tracking import queries
from services.tracking.domain import PLACED_NOTE, StatusFollowed
from shopkit.consumer import EventData, EventHandler, IncomingEvent, Subscription
from shopkit.events import ORDER_CREATED, ORDER_STATUS_CHANGED

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


def _status(event: IncomingEvent) -> StatusFollowed:
    """The status an event reports. A change may arrive before the order.created it follows:
    the tracking is created from it, and the placed entry joins the timeline (by time) when
    it comes."""
    data: OrderCreated | OrderStatusChanged = event.data
    if isinstance(data, OrderCreated):
        return StatusFollowed(
            data.order_id, data.user_id, data.version, data.status, PLACED_NOTE,
            event.occurred_at,
        )
    return StatusFollowed(
        data.order_id, data.user_id, data.version, data.to, data.note, event.occurred_at
    )


async def follow_all(conn: asyncpg.Connection, events: list[IncomingEvent]) -> None:
    await queries.follow_statuses(conn, [_status(event) for event in events])


async def follow(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    await follow_all(conn, [event])


# follow_statuses is one statement, and the version it checks makes a repeat a no-op.
SUBSCRIPTION = Subscription(
    QUEUE,
    {
        event_type: EventHandler(model, follow, deduplicates_itself=True, apply_many=follow_all)
        for event_type, model in (
            (ORDER_CREATED, OrderCreated), (ORDER_STATUS_CHANGED, OrderStatusChanged)
        )
    },
)
