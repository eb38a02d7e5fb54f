"""HTTP endpoints of the tracking service."""

import uuid
from datetime import date, datetime
from typing import Annotated

import asyncpg
from aiohttp import web
from pydantic import BeforeValidator, StringConstraints, model_validator

from services.tracking import domain, queries
from shopkit import errors
from shopkit.app import POOL_KEY, ensure_visible, require_admin, require_user
from shopkit.identity import Identity
from shopkit.openapi import Access, documented
from shopkit.outbox import add_event
from shopkit.web import ApiModel, from_row, ok, path_id, read_model, request_id

routes = web.RouteTableDef()

Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _date_text(value: object) -> object:
    """A date comes as the text YYYY-MM-DD, as documented; pydantic would also take a number
    (seconds since 1970) and make a date of it."""
    if not isinstance(value, str):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


DateText = Annotated[date, BeforeValidator(_date_text)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class Checkpoint(ApiModel):
    location: Short
    note: Note | None = None


class TrackingChange(ApiModel):
    carrier: Short | None = None
    tracking_number: Short | None = None
    estimated_delivery: DateText | None = None
    checkpoint: Checkpoint | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> "TrackingChange":
        if all(v is None for v in (self.carrier, self.tracking_number,
                                   self.estimated_delivery, self.checkpoint)):
            raise ValueError("give at least one of carrier, trackingNumber, estimatedDelivery, "
                             "checkpoint")
        return self


class TimelineEntry(ApiModel):
    status: str
    note: str | None
    location: str | None
    occurred_at: datetime


class Tracking(ApiModel):
    order_id: uuid.UUID
    status: str
    carrier: str | None
    tracking_number: str | None
    estimated_delivery: date | None
    timeline: list[TimelineEntry]


async def _visible(conn: asyncpg.Connection, caller: Identity, order_id: uuid.UUID) -> Tracking:
    """The owner's or an admin's; 404 for anyone else, and until the tracking exists."""
    row = await queries.tracking(conn, order_id)
    ensure_visible(caller, row["user_id"] if row else None, "No tracking for this order (yet).")
    entries = await queries.timeline(conn, order_id)
    return from_row(Tracking, row, timeline=[from_row(TimelineEntry, e) for e in entries])


@routes.get("/api/orders/{order_id}/tracking")
@documented("Delivery tracking of your order", Access.USER, answer=Tracking)
async def get_tracking(request: web.Request) -> web.Response:
    caller = require_user(request)
    async with request.app[POOL_KEY].acquire() as conn:
        return ok(await _visible(conn, caller, path_id(request, "order_id")))


@routes.post("/api/admin/orders/{order_id}/tracking")
@documented("Set carrier details or add a checkpoint", Access.ADMIN, body=TrackingChange,
            answer=Tracking)
async def update_tracking(request: web.Request) -> web.Response:
    caller = require_admin(request)
    order_id = path_id(request, "order_id")
    body = await read_model(request, TrackingChange)
    async with request.app[POOL_KEY].acquire() as conn:
        async with conn.transaction():
            await queries.lock_order(conn, order_id)
            if await queries.tracking(conn, order_id) is None:
                raise errors.NotFound("No tracking for this order (yet).")
            row = await queries.set_delivery_details(
                conn, order_id, body.carrier, body.tracking_number, body.estimated_delivery
            )
            checkpoint = None
            if body.checkpoint is not None:
                location, note = body.checkpoint.location, body.checkpoint.note
                at = await queries.add_checkpoint(conn, order_id, row["status"], location, note)
                checkpoint = domain.Checkpoint(location, note, at)
            delivery = domain.Delivery(
                order_id, row["user_id"], row["status"], row["carrier"], row["tracking_number"],
                row["estimated_delivery"],
            )
            event = domain.tracking_updated(delivery, checkpoint)
            await add_event(conn, event, aggregate_id=str(order_id), request_id=request_id(request))
        return ok(await _visible(conn, caller, order_id))
