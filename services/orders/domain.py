"""Rules of orders and stock, free of HTTP and SQL."""

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
# A product's stock stays well inside the 32-bit column, cancellations included.
MAX_STOCK = 1_000_000_000


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

    Placing checks the same on the locked rows, in the statement that writes the order (where
    it also prices the lines): this rule says why an order was refused."""
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
