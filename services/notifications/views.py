"""The notification as clients see it."""

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shopkit.web import ApiModel, from_row


class Notification(ApiModel):
    id: uuid.UUID
    type: str
    title: str
    body: str
    order_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None


def notification_view(row: Mapping[str, Any]) -> Notification:
    """From a row as asyncpg reads it, or as row_to_json sends it to the hub."""
    return from_row(Notification, row)
