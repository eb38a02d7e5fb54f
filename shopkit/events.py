"""The contract's events: their owners, and an event as a service makes it. Its envelope
(`{id, type, occurredAt, source, data}`) is written by shopkit.outbox.event_insert alone."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXCHANGE = "shop.events"

# Which component publishes the events of each type, by the type's first word: the one that
# may publish them (shopkit.broker_access) and the only `source` a consumer believes.
EVENT_OWNERS = {"auth": "auth", "order": "orders", "tracking": "tracking"}
# The contract's event types. SESSION_REVOKED is the event every component that caches
# sessions, or serves on them, must hear.
SESSION_REVOKED = "auth.session_revoked"
ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status_changed"
TRACKING_UPDATED = "tracking.updated"


def owner_of(event_type: str, owners: Mapping[str, str] = EVENT_OWNERS) -> str | None:
    return owners.get(event_type.split(".", 1)[0])


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    data: dict[str, Any]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
