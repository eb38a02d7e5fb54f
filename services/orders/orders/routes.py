"""Orders: placing (stock taken all or nothing, idempotent), reading, cancelling, admin status.

Every change is one transaction holding the order's row (or the products' rows) locked: the
status, the version, the history entry, the stock and the outbox event commit together.
"""

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from aiohttp import web
from pydantic import Field, StrictInt, StringConstraints, field_validator

from services.orders.orders import domain, queries
from services.orders.orders.domain import OrderStatus
from services.orders.settings import OrdersSettings
from shopkit import errors
from shopkit.app import (
    POOL_KEY,
    ensure_visible,
    require_admin,
    require_user,
    settings_of,
)
from shopkit.identity import Identity, Role
from shopkit.openapi import Access, documented
from shopkit.pagination import (
    NEWEST_FIRST,
    PageOf,
    PageQuery,
)
from shopkit.web import (
    ApiModel,
    from_row,
    ok,
    path_id,
    read_headers,
    read_model,
    read_query,
    request_id,
)

routes = web.RouteTableDef()

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
IDEMPOTENCY_KEY = "Idempotency-Key"
Products = dict[uuid.UUID, domain.StockedProduct]
_KEY_SHAPE = r"^[\x21-\x7e]{1,255}$"


class LineIn(ApiModel):
    product_id: uuid.UUID
    quantity: Annotated[StrictInt, Field(ge=1, le=100)]


class OrderIn(ApiModel):
    address_id: uuid.UUID
    items: Annotated[list[LineIn], Field(min_length=1, max_length=50)]
    note: Note | None = None

    @field_validator("items")
    @classmethod
    def _each_product_once(cls, items: list[LineIn]) -> list[LineIn]:
        if len({line.product_id for line in items}) != len(items):
            raise ValueError("list each product once, with its total quantity")
        return items


class StatusChange(ApiModel):
    status: OrderStatus
    note: Note | None = None


class PlacementHeaders(ApiModel):
    idempotency_key: Annotated[str, Field(pattern=_KEY_SHAPE)] | None = Field(
        None, alias=IDEMPOTENCY_KEY,
        description="The same key with the same body gives back the same order.",
    )


class OrderQuery(PageQuery):
    status: OrderStatus | None = None


class AdminOrderQuery(OrderQuery):
    user_id: uuid.UUID | None = None


class Item(ApiModel):
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    quantity: int


class HistoryEntry(ApiModel):
    status: OrderStatus
    note: str | None
    changed_by: uuid.UUID | None  # None: the system (an order that expired unconfirmed)
    changed_at: datetime


class Order(ApiModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    items: list[Item]
    total_cents: int
    shipping_address: dict[str, Any]
    note: str | None
    history: list[HistoryEntry]
    created_at: datetime
    updated_at: datetime
    version: int


# Reading -----------------------------------------------------------------------------------


def _order_from(row: asyncpg.Record, items: list[Item], history: list[HistoryEntry]) -> Order:
    return from_row(Order, row, items=items, history=history)


async def order_views(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Order]:
    ids = [row["id"] for row in rows]
    items: dict[uuid.UUID, list[Item]] = {i: [] for i in ids}
    history: dict[uuid.UUID, list[HistoryEntry]] = {i: [] for i in ids}
    for r in await queries.items_of(conn, ids):
        items[r["order_id"]].append(from_row(Item, r))
    for r in await queries.history_of(conn, ids):
        history[r["order_id"]].append(from_row(HistoryEntry, r))
    return [_order_from(row, items[row["id"]], history[row["id"]]) for row in rows]


async def order_view(conn: asyncpg.Connection, row: asyncpg.Record) -> Order:
    return (await order_views(conn, [row]))[0]


async def _visible_order(conn: asyncpg.Connection, caller: Identity, order_id: uuid.UUID) -> Order:
    """The order if the caller owns it or is an admin; 404 otherwise (never 'it exists')."""
    row = await queries.order(conn, order_id)
    ensure_visible(caller, row["user_id"] if row else None, "No such order.")
    return await order_view(conn, row)


async def _order_page(
    request: web.Request, user_id: uuid.UUID | None, query: OrderQuery
) -> web.Response:
    page = query.page()
    after = page.after_key(NEWEST_FIRST)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.list_orders(conn, user_id, query.status, after, page.limit + 1)
        views = {v.id: v for v in await order_views(conn, rows[: page.limit])}
    return ok(
        page.answer(rows, NEWEST_FIRST, lambda r: views[r["id"]])
    )


@routes.get("/api/orders")
@documented("Your orders, newest first", Access.USER, answer=PageOf[Order], query=OrderQuery)
async def list_own_orders(request: web.Request) -> web.Response:
    caller = require_user(request)
    return await _order_page(request, caller.user_id, read_query(request, OrderQuery))


@routes.get("/api/admin/orders")
@documented("Every order, newest first", Access.ADMIN, answer=PageOf[Order],
            query=AdminOrderQuery)
async def list_all_orders(request: web.Request) -> web.Response:
    require_admin(request)
    query = read_query(request, AdminOrderQuery)
    return await _order_page(request, query.user_id, query)


@routes.get("/api/orders/{order_id}")
@documented("One of your orders", Access.USER, answer=Order)
async def get_order(request: web.Request) -> web.Response:
    caller = require_user(request)
    order_id = path_id(request, "order_id")
    async with request.app[POOL_KEY].acquire() as conn:
        return ok(await _visible_order(conn, caller, order_id))


# Placing -----------------------------------------------------------------------------------


@routes.post("/api/orders")
@documented("Place an order: stock for every line taken, all or nothing", Access.USER,
            body=OrderIn, headers=PlacementHeaders, answer=Order, status=201,
            errors={404: "No such address of yours.",
                    409: "Not enough stock (`insufficient_stock`, lines in `details`), too many "
                         "of your orders are still placed (`too_many_open_orders`), or the "
                         "Idempotency-Key was used for another body (`idempotency_key_reused`)."})
async def place_order(request: web.Request) -> web.Response:
    caller = require_user(request)
    assert caller.user_id
    body = await read_model(request, OrderIn)
    placement = domain.Placement(
        order_id=uuid.uuid4(),
        user_id=caller.user_id,
        address_id=body.address_id,
        lines=tuple(domain.Line(line.product_id, line.quantity) for line in body.items),
        note=body.note,
        idempotency_key=read_headers(request, PlacementHeaders).idempotency_key,
        # The request as understood (unknown fields dropped), whatever its spelling.
        fingerprint=domain.fingerprint(body.model_dump(mode="json")),
        max_open=settings_of(request.app, OrdersSettings).max_open_orders_per_user,
    )
    async with request.app[POOL_KEY].acquire() as conn:
        order = await _place(conn, placement, request_id(request))
    return ok(order, status=201)


async def _place(conn: asyncpg.Connection, placement: domain.Placement, rid: str) -> Order:
    """One round trip: queries.place_order checks, prices and writes the order with its event
    in one statement, under the products' locks. When it writes nothing, what it read says
    why: an order placed earlier with this Idempotency-Key (that order is the answer), an
    address that is not the user's, too many open orders, or lines the domain finds unknown or
    short. A concurrent retry with the same key is caught by the unique index: its order is
    the answer.
    """
    key = placement.idempotency_key
    try:
        row = await queries.place_order(conn, placement, rid)
    except asyncpg.UniqueViolationError as exc:
        if key is None or exc.constraint_name != queries.IDEMPOTENCY_INDEX:
            raise
        return await _replay(conn, placement)
    if row["id"] is not None:
        # Built from what was just written: reading it back would cost more round trips.
        items = [Item.model_validate(item) for item in row["items"]]
        return _order_from(row, items, [HistoryEntry(
            status=OrderStatus.PLACED, note=None, changed_by=placement.user_id,
            changed_at=row["created_at"],
        )])
    if key is not None and row["earlier"] is not None:
        return await _replay(conn, placement)
    if not row["address_found"]:
        raise errors.NotFound("No such address.")
    if row["too_many_open"]:
        raise errors.Conflict(
            f"You have {placement.max_open} orders waiting to be confirmed; cancel one, or "
            "wait for them to be confirmed, before placing another.",
            code="too_many_open_orders",
        )
    lines = list(placement.lines)
    _check_stock(lines, {p[0]: domain.StockedProduct(*p) for p in row["products"]})
    # The statement found a line short or unknown; check_stock, the same rule, names it.
    # tests/integration/test_order_rules.py holds the two together.
    raise AssertionError("place_order and domain.check_stock disagree")


async def _replay(conn: asyncpg.Connection, placement: domain.Placement) -> Order:
    """The order a request with the same Idempotency-Key made, if the body was the same."""
    assert placement.idempotency_key is not None
    earlier = await queries.order_by_key(conn, placement.user_id, placement.idempotency_key)
    if earlier is None or earlier["request_fingerprint"] != placement.fingerprint:
        raise errors.Conflict(
            "This Idempotency-Key was used for another request.", code="idempotency_key_reused"
        )
    return await order_view(conn, earlier)


def _check_stock(lines: list[domain.Line], products: Products) -> None:
    """Raises the API's answer when a line is unknown or short."""
    try:
        domain.check_stock(lines, products)
    except domain.UnknownProducts as exc:
        positions = {line.product_id: n for n, line in enumerate(lines)}
        raise errors.ValidationFailed(
            details=[
                {"field": f"items.{positions[p]}.productId", "message": "no such product"}
                for p in exc.product_ids
            ]
        ) from exc
    except domain.OutOfStock as exc:
        skus = ", ".join(s.sku for s in exc.shortages)
        raise errors.Conflict(
            f"Not enough stock for: {skus}.",
            code="insufficient_stock",
            details=[
                {"productId": str(s.product_id), "sku": s.sku, "requested": s.requested,
                 "available": s.available}
                for s in exc.shortages
            ],
        ) from exc


# Changing status ---------------------------------------------------------------------------


@routes.post("/api/orders/{order_id}/cancel")
@documented("Cancel your order (its stock goes back)", Access.USER, answer=Order,
            errors={409: "The order cannot move to that status (`invalid_transition`)."})
async def cancel_order(request: web.Request) -> web.Response:
    caller = require_user(request)
    order_id = path_id(request, "order_id")
    return await _change_status(request, caller, order_id, StatusChange(status="cancelled"))


@routes.post("/api/admin/orders/{order_id}/status")
@documented("Move an order to another status", Access.ADMIN, body=StatusChange, answer=Order,
            errors={409: "The order cannot move to that status (`invalid_transition`)."})
async def set_order_status(request: web.Request) -> web.Response:
    caller = require_admin(request)
    order_id = path_id(request, "order_id")
    body = await read_model(request, StatusChange)
    return await _change_status(request, caller, order_id, body)


async def _change_status(
    request: web.Request, caller: Identity, order_id: uuid.UUID, change: StatusChange
) -> web.Response:
    assert caller.user_id
    move = domain.Move.asked(
        order_id, change.status, change.note, caller.user_id, caller.role is Role.ADMIN
    )
    async with request.app[POOL_KEY].acquire() as conn:
        return ok(await _move(conn, move, request_id(request)))


async def _move(conn: asyncpg.Connection, move: domain.Move, rid: str) -> Order:
    """One round trip: queries.move_order checks the move against the status it reads under
    the order's lock, and writes it with its history, its event and (for a cancellation) the
    stock given back, in one statement. The rules stay the domain's: the move names the
    statuses the order may come from, and whether it gives stock back."""
    row = await queries.move_order(conn, move, rid)
    if row["current_status"] is None:
        raise errors.NotFound("No such order.")
    if row["id"] is None:
        raise errors.Conflict(
            f"An order that is {row['current_status']} cannot become {move.to}.",
            code="invalid_transition",
        )
    history = [*(row["earlier_history"] or []), row["entry"]]
    if len(history) != row["version"]:
        # A change committed while this one waited for the lock is missing from the
        # statement's snapshot: the history as it is now, up to this version.
        view = await order_view(conn, row)
        return view.model_copy(update={"history": view.history[: row["version"]]})
    return _order_from(
        row,
        [Item.model_validate(item) for item in row["items"]],
        [HistoryEntry.model_validate(entry) for entry in history],
    )
