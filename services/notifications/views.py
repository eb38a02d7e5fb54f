"""The notification as clients see it."""

import uuid
from datetime import datetime

import asyncpg

from shopkit.web import ApiModel


class Notification(ApiModel):
    id: uuid.UUID
    type: str
    title: str
    body: str
    order_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None


def notification_view(row: asyncpg.Record) -> Notification:
    return Notification(**{name: row[name] for name in Notification.model_fields})
