"""HTTP endpoints of the notifications service."""

import asyncio

import orjson
from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import Field

from services.notifications import queries
from services.notifications.hub import END, Hub
from services.notifications.views import Notification, notification_view
from shopkit import errors
from shopkit.app import POOL_KEY, SETTINGS_KEY, require_user
from shopkit.openapi import Access, documented
from shopkit.pagination import NEWEST, PageQuery, cursor_time, cursor_uuid, page_of
from shopkit.web import ApiModel, ok, path_id

routes = web.RouteTableDef()
HUB_KEY = web.AppKey("hub", Hub)


class NotificationQuery(PageQuery):
    unread: bool = Field(False, description="only the unread ones")


class NotificationPage(ApiModel):
    items: list[Notification]
    unread_count: int
    next_cursor: str | None


class Updated(ApiModel):
    updated: int


def _unread_only(request: web.Request) -> bool:
    raw = request.query.get("unread", "false").lower()
    if raw not in ("true", "false"):
        raise errors.ValidationFailed(details=[{"field": "unread", "message": "true or false"}])
    return raw == "true"


@routes.get("/api/notifications")
@documented("Your notifications, newest first", Access.USER, answer=NotificationPage,
            query=NotificationQuery)
async def list_notifications(request: web.Request) -> web.Response:
    caller = require_user(request)
    unread_only = _unread_only(request)
    page = page_of(request)
    after = page.after_key(cursor_time, cursor_uuid, first=NEWEST)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.page(conn, caller.user_id, unread_only, after, page.limit + 1)
        unread = await queries.unread_count(conn, caller.user_id)
    listing = page.answer(
        rows, lambda r: [r["created_at"].isoformat(), str(r["id"])], notification_view
    )
    return ok(NotificationPage(unread_count=unread, **listing))


@routes.post("/api/notifications/read-all")
@documented("Mark all your notifications read", Access.USER, answer=Updated)
async def read_all(request: web.Request) -> web.Response:
    caller = require_user(request)
    async with request.app[POOL_KEY].acquire() as conn:
        return ok(Updated(updated=await queries.mark_all_read(conn, caller.user_id)))


@routes.post("/api/notifications/{notification_id}/read")
@documented("Mark one notification read", Access.USER, answer=Notification)
async def read_one(request: web.Request) -> web.Response:
    caller = require_user(request)
    notification_id = path_id(request, "notification_id")
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.mark_read(conn, caller.user_id, notification_id)
    if row is None:
        raise errors.NotFound("No such notification.")
    return ok(notification_view(row))


@routes.get("/api/notifications/stream")
@documented("New notifications as Server-Sent Events (`event: notification`)", Access.USER,
            media_type="text/event-stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one `notification` event per new notification while connected."""
    caller = require_user(request)
    assert caller.user_id
    interval = request.app[SETTINGS_KEY].sse_ping_interval_seconds  # type: ignore[attr-defined]
    # Subscribed before the response starts: whatever is created once the client has the
    # headers reaches it.
    hub = request.app[HUB_KEY]
    async with hub.subscribe(caller.user_id, caller.session_id) as stream, sse_response(
        request, ping_interval=interval, headers={"X-Accel-Buffering": "no"}
    ) as events:
        closed = asyncio.ensure_future(events.wait())
        try:
            while True:
                next_push = asyncio.ensure_future(stream.pushes.get())
                done, _ = await asyncio.wait(
                    {next_push, closed}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_push not in done:
                    next_push.cancel()
                    break
                notification = next_push.result()
                if notification is END:  # session revoked, or pushes may have been missed
                    break
                await events.send(
                    orjson.dumps(notification).decode(), id=notification["id"],
                    event="notification",
                )
        finally:
            closed.cancel()
    return events
