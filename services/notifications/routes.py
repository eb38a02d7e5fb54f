"""HTTP endpoints of the notifications service."""

import asyncio
import contextlib
import time
import uuid
from typing import Annotated, Any

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from pydantic import BeforeValidator, Field

from services.notifications import queries
from services.notifications.hub import Hub, Stream
from services.notifications.settings import NotificationsSettings
from services.notifications.views import Notification, notification_view
from shopkit import db, errors, tracing
from shopkit.app import POOL_KEY, require_user, settings_of
from shopkit.db import DATABASE_ERRORS
from shopkit.openapi import Access, documented
from shopkit.pagination import NEWEST_FIRST, PageQuery
from shopkit.web import ApiModel, ok, path_id, read_headers, read_query

routes = web.RouteTableDef()
HUB_KEY = web.AppKey("hub", Hub)


def _true_or_false(value: object) -> object:
    """`true` or `false`, in any case: what `?unread=` takes."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError("true or false")
        return value.lower() == "true"
    return value


class NotificationQuery(PageQuery):
    unread: Annotated[bool, BeforeValidator(_true_or_false)] = Field(
        False, description="only the unread ones"
    )


class NotificationPage(ApiModel):
    items: list[Notification]
    unread_count: int
    next_cursor: str | None


class Updated(ApiModel):
    updated: int


@routes.get("/api/notifications")
@documented("Your notifications, newest first", Access.USER, answer=NotificationPage,
            query=NotificationQuery)
async def list_notifications(request: web.Request) -> web.Response:
    caller = require_user(request)
    query = read_query(request, NotificationQuery)
    page = query.page()
    after = page.after_key(NEWEST_FIRST)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.page(conn, caller.user_id, query.unread, after, page.limit + 1)
        unread = await queries.unread_count(conn, caller.user_id)
    listing = page.answer(rows, NEWEST_FIRST, notification_view)
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


class StreamHeaders(ApiModel):
    last_event_id: uuid.UUID | None = Field(
        None, alias="Last-Event-ID",
        description="The id of the last notification received: the stream first sends every "
                    "one of yours created after it, oldest first.",
    )


CATCH_UP_PAGE = 100


@routes.get("/api/notifications/stream")
@documented("New notifications as Server-Sent Events (`event: notification`)", Access.USER,
            headers=StreamHeaders, media_type="text/event-stream",
            errors={429: "You have as many streams open as allowed (`too_many_streams`).",
                    503: "This instance serves as many streams as it can; retry after "
                         "`Retry-After` seconds."})
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: after a reconnect (Last-Event-ID), every notification of the user's
    created since that one, oldest first; then one `notification` event per new notification
    while connected. The stream ends when its session does (revoked, or over)."""
    caller = require_user(request)
    assert caller.user_id
    resume_after = read_headers(request, StreamHeaders).last_event_id
    settings = settings_of(request.app, NotificationsSettings)
    hub = request.app[HUB_KEY]
    pool = request.app[POOL_KEY]
    # Subscribed before anything is read or sent: whatever is created from now on reaches it,
    # and a revocation from now on ends it (one from before is found by open_stream).
    async with hub.subscribe(caller.user_id, caller.session_id) as stream:
        async with pool.acquire() as conn:
            admission = await queries.open_stream(
                conn, stream.id, caller.user_id, caller.session_id, hub.instance_id,
                settings.stream_lease_seconds, settings.max_streams_per_user,
            )
        if admission is queries.StreamAdmission.REVOKED:
            raise errors.Unauthorized("The session has ended; sign in again.")
        if admission is queries.StreamAdmission.FULL:
            raise errors.TooManyRequests(
                STREAM_RETRY_SECONDS,
                f"You have {settings.max_streams_per_user} event streams open already; "
                "close one first.", code="too_many_streams",
            )
        try:
            async with sse_response(
                request, ping_interval=settings.sse_ping_interval_seconds,
                headers={"X-Accel-Buffering": "no"},
            ) as events:
                sent = await _catch_up(events, pool, caller.user_id, resume_after)
                await _follow(events, stream, sent, caller.session_ends_at)
        finally:
            await _forget_stream(pool, stream.id)
    return events


# How soon a client refused for having too many streams may try again.
STREAM_RETRY_SECONDS = 5


async def _catch_up(
    events: EventSourceResponse, pool: db.Pool, user_id: uuid.UUID,
    after: uuid.UUID | None,
) -> set[str]:
    """Sends every notification of the user's created after `after`, oldest first, and
    returns their ids (a push of one of them may follow, and is not sent twice)."""
    sent: set[str] = set()
    while after is not None:
        async with pool.acquire() as conn:
            rows = await queries.notifications_after(conn, user_id, after, CATCH_UP_PAGE)
        for row in rows:
            view = notification_view(row).model_dump(mode="json", by_alias=True)
            await _send(events, view, row["traceparent"])
            sent.add(view["id"])
        after = rows[-1]["id"] if len(rows) == CATCH_UP_PAGE else None
    return sent


async def _follow(
    events: EventSourceResponse, stream: Stream, already_sent: set[str],
    session_ends_at: float | None,
) -> None:
    """Sends each push until the client goes, the stream must end (`stream.ended`: session
    revoked, pushes missed), or the session is over."""
    stop = {asyncio.ensure_future(events.wait()), asyncio.ensure_future(stream.ended.wait())}
    try:
        while True:
            left = None if session_ends_at is None else session_ends_at - time.time()
            if left is not None and left <= 0:
                return
            next_push = asyncio.ensure_future(stream.pushes.get())
            done, _ = await asyncio.wait(
                {next_push, *stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if not done & stop and next_push in done:
                notification, traceparent = next_push.result()
                if notification["id"] not in already_sent:
                    await _send(events, notification, traceparent)
                continue
            next_push.cancel()
            if done & stop:
                return
            # else the session's end came: checked at the top
    finally:
        for waiter in stop:
            waiter.cancel()


async def _send(
    events: EventSourceResponse, notification: dict[str, Any], traceparent: str | None
) -> None:
    """Sends one notification, in a span of the trace that created it (when it was traced),
    linked to the stream's request."""
    with tracing.span_from(traceparent, "send notification", "producer",
                           **{"shop.notification.id": notification["id"]}):
        await events.send(orjson.dumps(notification).decode(), id=notification["id"],
                          event="notification")


async def _forget_stream(pool: db.Pool, stream_id: uuid.UUID) -> None:
    """The stream stops counting against its user at once; if the database cannot be told
    now, its lease runs out instead."""
    with contextlib.suppress(*DATABASE_ERRORS):
        async with pool.acquire() as conn:
            await queries.close_stream(conn, stream_id)
