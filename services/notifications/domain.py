"""What a customer is told, free of HTTP and SQL."""

from dataclasses import dataclass
from uuid import UUID

ORDER_STATUS = "order_status"
DELIVERY_UPDATE = "delivery_update"

_TITLES = {
    "placed": "Your order was placed",
    "confirmed": "Your order is confirmed",
    "shipped": "Your order has shipped",
    "in_transit": "Your order is on its way",
    "out_for_delivery": "Your order is out for delivery",
    "delivered": "Your order was delivered",
    "cancelled": "Your order was cancelled",
}
_PHRASES = {
    "placed": "has been placed",
    "confirmed": "is confirmed and being prepared",
    "shipped": "has left our warehouse",
    "in_transit": "is on its way to you",
    "out_for_delivery": "is out for delivery and should arrive today",
    "delivered": "has been delivered",
    "cancelled": "has been cancelled",
}


@dataclass(frozen=True)
class Message:
    type: str
    title: str
    body: str


def short_id(order_id: UUID) -> str:
    return str(order_id)[:8].upper()


def status_message(order_id: UUID, status: str, note: str | None) -> Message:
    title = _TITLES.get(status, f"Your order is now {status.replace('_', ' ')}")
    phrase = _PHRASES.get(status, f"is now {status.replace('_', ' ')}")
    body = f"Order {short_id(order_id)} {phrase}."
    return Message(ORDER_STATUS, title, f"{body} {note}" if note else body)


def checkpoint_message(order_id: UUID, location: str, note: str | None) -> Message:
    body = f"Order {short_id(order_id)} reached {location}."
    return Message(
        DELIVERY_UPDATE, f"Delivery update: {location}", f"{body} {note}" if note else body
    )
