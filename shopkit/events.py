"""The contract's event envelope: `{id, type, occurredAt, source, data}`."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXCHANGE = "shop.events"


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    data: dict[str, Any]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def envelope(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "occurredAt": self.occurred_at.isoformat(),
            "source": self.source,
            "data": self.data,
        }
