"""Rules of tracking, free of HTTP and SQL: what an order's status events put on its
timeline, and what a change of its delivery tells the world."""

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from shopkit.events import TRACKING_UPDATED, Event

SOURCE = "tracking"
# The timeline's note for an order's first status: order.created carries none.
PLACED_NOTE = "Order placed"


@dataclass(frozen=True)
class StatusFollowed:
    """A status of an order as an event reported it. The tracking holds the newest version it
    was given and the timeline every status once, whatever order events arrive in and however
    often (queries.follow_statuses)."""

    order_id: UUID
    user_id: UUID
    version: int
    status: str
    note: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class Delivery:
    """An order's delivery as tracking now has it."""

    order_id: UUID
    user_id: UUID
    status: str
    carrier: str | None
    tracking_number: str | None
    estimated_delivery: date | None


@dataclass(frozen=True)
class Checkpoint:
    location: str
    note: str | None
    occurred_at: datetime


def tracking_updated(delivery: Delivery, checkpoint: Checkpoint | None) -> Event:
    """What every consumer hears of a change of delivery: the delivery as it now is, and the
    checkpoint added, if any (the event then occurred when the checkpoint did)."""
    return Event(
        type=TRACKING_UPDATED,
        source=SOURCE,
        data={
            "orderId": str(delivery.order_id),
            "userId": str(delivery.user_id),
            "status": delivery.status,
            "carrier": delivery.carrier,
            "trackingNumber": delivery.tracking_number,
            "estimatedDelivery": (
                delivery.estimated_delivery.isoformat() if delivery.estimated_delivery else None
            ),
            "checkpoint": None if checkpoint is None else {
                "location": checkpoint.location,
                "note": checkpoint.note,
                "occurredAt": checkpoint.occurred_at.isoformat(),
            },
        },
        **({"occurred_at": checkpoint.occurred_at} if checkpoint else {}),
    )
