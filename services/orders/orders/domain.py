"""Rules of orders, free of HTTP and SQL: the status machine, the stock an order needs, when
two placements are the same, and the shapes of what an order tells the world (its events) and
keeps (a copy of its address, its lines, its history)."""

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

import orjson


class OrderStatus(StrEnum):
    PLACED = "placed"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


FORWARD = [
    OrderStatus.PLACED,
    OrderStatus.CONFIRMED,
    OrderStatus.SHIPPED,
    OrderStatus.IN_TRANSIT,
    OrderStatus.OUT_FOR_DELIVERY,
    OrderStatus.DELIVERED,
]
CANCELLABLE = frozenset({OrderStatus.PLACED, OrderStatus.CONFIRMED})
# The history note of an order the system cancelled because it stayed `placed` too long.
EXPIRED_NOTE = "expired"


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    """Forward only (steps may be skipped); cancel only before shipping; final states stay."""
    if target is OrderStatus.CANCELLED:
        return current in CANCELLABLE
    if current is OrderStatus.CANCELLED:
        return False
    return FORWARD.index(target) > FORWARD.index(current)


def reachable_from(target: OrderStatus) -> list[OrderStatus]:
    """The statuses an order may move to `target` from."""
    return [status for status in OrderStatus if can_move(status, target)]


def gives_stock_back(target: OrderStatus) -> bool:
    """A cancelled order's lines go back to stock."""
    return target is OrderStatus.CANCELLED


@dataclass(frozen=True)
class Line:
    product_id: UUID
    quantity: int


@dataclass(frozen=True)
class StockedProduct:
    id: UUID
    sku: str
    name: str
    price_cents: int
    stock: int


@dataclass(frozen=True)
class Shortage:
    product_id: UUID
    sku: str
    requested: int
    available: int


class UnknownProducts(Exception):
    def __init__(self, product_ids: list[UUID]) -> None:
        super().__init__("unknown products")
        self.product_ids = product_ids


class OutOfStock(Exception):
    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__("insufficient stock")
        self.shortages = shortages


def check_stock(lines: list[Line], products: dict[UUID, StockedProduct]) -> None:
    """An order is placed only when every line names a product and is in stock. Raises naming
    every line that is unknown or short (not only the first), so the client can fix them all.

    The statement that places an order applies this rule itself, on the locked rows, to place
    it in one round trip (orders.queries.place_order); when it did not place one, this rule
    names what was wrong. tests/integration/test_order_rules.py holds the two together."""
    unknown = [line.product_id for line in lines if line.product_id not in products]
    if unknown:
        raise UnknownProducts(unknown)
    short = [
        Shortage(line.product_id, products[line.product_id].sku, line.quantity, stock)
        for line in lines
        if (stock := products[line.product_id].stock) < line.quantity
    ]
    if short:
        raise OutOfStock(short)


def fingerprint(body: Any) -> bytes:
    """What makes two create requests 'the same' for an Idempotency-Key: the parsed body, with
    key order and white space not counting."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True)
class Placement:
    """An order to place, as asked: placed only if the address is the user's, no order was
    placed with the key, the user has fewer than `max_open` orders in `placed`, and every line
    is in stock (check_stock)."""

    order_id: UUID
    user_id: UUID
    address_id: UUID
    lines: tuple[Line, ...]
    note: str | None
    idempotency_key: str | None
    fingerprint: bytes
    max_open: int


@dataclass(frozen=True)
class Move:
    """A change of an order's status, to `to`, made only from one of `allowed_from`, by `by`
    (None: the system), who may move others' orders if `any_owner`."""

    order_id: UUID
    to: OrderStatus
    allowed_from: tuple[OrderStatus, ...]
    note: str | None
    by: UUID | None
    any_owner: bool

    @classmethod
    def asked(
        cls, order_id: UUID, to: OrderStatus, note: str | None, by: UUID, is_admin: bool
    ) -> "Move":
        """A move a customer or an admin asks for: from wherever the machine allows."""
        return cls(order_id, to, tuple(reachable_from(to)), note, by, is_admin)

    @classmethod
    def expiry(cls, order_id: UUID) -> "Move":
        """The system cancelling an order left `placed` too long (and only if it still is)."""
        return cls(order_id, OrderStatus.CANCELLED, (OrderStatus.PLACED,), EXPIRED_NOTE, None,
                   True)

    @property
    def gives_stock_back(self) -> bool:
        return gives_stock_back(self.to)


# Events, and what an order keeps. Each shape names the JSON key of each column it is written
# from; the statements that write them are made from these shapes (shopkit.sqljson).
# tests/unit/test_order_shapes.py holds them to the contract and the API's models, and
# tests/integration/test_order_events.py holds what reaches RabbitMQ to the contract.
SOURCE = "orders"
ITEM = {"productId": "product_id", "sku": "sku", "name": "name",
        "unitPriceCents": "unit_price_cents", "quantity": "quantity"}
HISTORY_ENTRY = {"status": "status", "note": "note", "changedBy": "changed_by",
                 "changedAt": "changed_at"}
# The copy of the address an order keeps (the address may change or go later).
SHIPPING_ADDRESS = {"id": "id", "label": "label", "recipient": "recipient", "line1": "line1",
                    "line2": "line2", "city": "city", "postalCode": "postal_code",
                    "country": "country", "phone": "phone"}
# `data` of order.created: the order as placed, its items shaped as ITEM.
CREATED = {"orderId": "id", "userId": "user_id", "status": "status",
           "totalCents": "total_cents", "items": "items", "version": "version"}
# `data` of order.status_changed: `previous` is the status it left, `change_note` the note of
# the history entry (not the order's own note).
STATUS_CHANGED = {"orderId": "id", "userId": "user_id", "from": "previous", "to": "status",
                  "note": "change_note", "version": "version"}
