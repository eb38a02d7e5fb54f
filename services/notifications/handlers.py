"""Which events become notifications (consumed through the kit's Consumer)."""

from uuid import UUID

import asyncpg
from pydantic import Field

from services.notifications import domain, queries
from shopkit.consumer import EventData, EventHandler, IncomingEvent, Subscription
from shopkit.events import ORDER_STATUS_CHANGED, SESSION_REVOKED, TRACKING_UPDATED

QUEUE = "notifications.events"


class OrderStatusChanged(EventData):
    order_id: UUID
    user_id: UUID
    to: str = Field(min_length=1)
    note: str | None = None


class CheckpointData(EventData):
    location: str = Field(min_length=1)
    note: str | None = None


class TrackingUpdated(EventData):
    order_id: UUID
    user_id: UUID
    checkpoint: CheckpointData | None = None


async def on_status_changed(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    data: OrderStatusChanged = event.data
    message = domain.status_message(data.order_id, data.to, data.note)
    await queries.add(conn, data.user_id, data.order_id, message, event.id)


async def on_tracking_updated(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    """Only a checkpoint is news to the customer; carrier or date changes alone are not."""
    data: TrackingUpdated = event.data
    if data.checkpoint is not None:
        message = domain.checkpoint_message(
            data.order_id, data.checkpoint.location, data.checkpoint.note
        )
        await queries.add(conn, data.user_id, data.order_id, message, event.id)


class SessionRevoked(EventData):
    user_id: UUID
    session_ids: list[UUID]


async def on_session_revoked(conn: asyncpg.Connection, event: IncomingEvent) -> None:
    """A revoked session's streams end on every instance: one instance consumes the event and
    records the sessions, NOTIFY tells every hub the event's id (however many sessions it
    ended), and each hub reads the sessions of its own streams."""
    data: SessionRevoked = event.data
    await queries.record_revoked(conn, event.id, data.user_id, data.session_ids)


SUBSCRIPTION = Subscription(
    QUEUE,
    {
        # queries.add is one statement; the event's id is unique among notifications.
        ORDER_STATUS_CHANGED: EventHandler(
            OrderStatusChanged, on_status_changed, deduplicates_itself=True
        ),
        TRACKING_UPDATED: EventHandler(
            TrackingUpdated, on_tracking_updated, deduplicates_itself=True
        ),
        SESSION_REVOKED: EventHandler(SessionRevoked, on_session_revoked),
    },
)
