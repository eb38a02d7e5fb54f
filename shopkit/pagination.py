"""The contract's list convention: `?limit=` (1..100, default 20), an opaque `?cursor=`,
answered as `{"items": [...], "nextCursor": ...}` (keyset pagination, stable under inserts)."""

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import orjson
from pydantic import BeforeValidator, Field

from shopkit import errors
from shopkit.web import ApiModel

# What the first page starts after: a key above (newest first) or below every row's. Statements
# are planned once for all parameters (shopkit.db), so the first page needs a bound the index
# can use, rather than a cursor condition that falls away when there is no cursor.
NEWEST = (datetime.max.replace(tzinfo=UTC), UUID(int=2**128 - 1))
NEWEST_BY_SEQUENCE = (datetime.max.replace(tzinfo=UTC), 2**63 - 1)
FROM_THE_START = ("",)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
T = TypeVar("T")


class PageOf(ApiModel, Generic[T]):
    """A page of a list, as documented; `Page.answer` builds it."""

    items: list[T]
    next_cursor: str | None


def _whole_number(value: Any) -> Any:
    """A query string's number is its digits alone: no sign, space, point or exponent."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return value


class PageQuery(ApiModel):
    """The list parameters: documented and read (shopkit.web.read_query) by this model."""

    limit: Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=MAX_LIMIT)] = (
        DEFAULT_LIMIT
    )
    cursor: str | None = Field(None, description="nextCursor of the previous page")

    def page(self) -> "Page":
        return Page(limit=self.limit, after=_cursor(self.cursor))


@dataclass(frozen=True)
class Page:
    limit: int
    after: list[Any] | None  # the sort key of the last item already seen

    def after_key(self, ordering: "Ordering") -> tuple[Any, ...]:
        """The cursor's key, each part parsed for the query (a tampered cursor is a 422); on
        the first page, the ordering's `first`."""
        if self.after is None:
            return ordering.first
        if len(self.after) != len(ordering.parts):
            raise _bad("cursor", "is not a cursor this API gave out")
        try:
            return tuple(
                parse(part) for parse, part in zip(ordering.parts, self.after, strict=True)
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise _bad("cursor", "is not a cursor this API gave out") from exc

    def answer(self, rows: Sequence[Any], ordering: "Ordering", item: Callable) -> dict:
        """`rows` were fetched with `limit + 1`: the extra row only says another page exists."""
        shown = rows[: self.limit]
        more = len(rows) > self.limit
        return {
            "items": [item(row) for row in shown],
            "nextCursor": encode_cursor(ordering.key(shown[-1])) if more and shown else None,
        }


# Parsers of cursor parts: strict, so a tampered cursor is a 422 and never a database error.


def cursor_time(part: Any) -> datetime:
    if not isinstance(part, str):
        raise TypeError("not a timestamp")
    value = datetime.fromisoformat(part)
    if value.tzinfo is None:
        raise ValueError("timestamp without time zone")
    return value.astimezone(UTC)  # OverflowError at the edges of the calendar


def cursor_int(part: Any) -> int:
    if type(part) is not int or not -(2**63) <= part < 2**63:
        raise ValueError("not a 64-bit integer")
    return part


def cursor_uuid(part: Any) -> UUID:
    if not isinstance(part, str):
        raise TypeError("not a UUID")
    return UUID(part)


def cursor_text(part: Any) -> str:
    if not isinstance(part, str):
        raise TypeError("not text")
    return part


@dataclass(frozen=True)
class Ordering:
    """How a list is paged: the columns of its sort key (unique per row), how each part of a
    cursor is parsed back, and the key the first page starts after."""

    columns: tuple[str, ...]
    parts: tuple[Callable[[Any], Any], ...]
    first: tuple[Any, ...]

    def key(self, row: Any) -> list[Any]:
        return [row[column] for column in self.columns]


NEWEST_FIRST = Ordering(("created_at", "id"), (cursor_time, cursor_uuid), NEWEST)
NEWEST_FIRST_BY_SEQUENCE = Ordering(
    ("created_at", "seq"), (cursor_time, cursor_int), NEWEST_BY_SEQUENCE
)


def encode_cursor(key: list[Any]) -> str:
    # default=str: asyncpg's UUIDs are a class of their own, which orjson does not know.
    return base64.urlsafe_b64encode(orjson.dumps(key, default=str)).decode().rstrip("=")


def _cursor(raw: str | None) -> list[Any] | None:
    if not raw:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise _bad("cursor", "is not a cursor this API gave out") from exc
    if not isinstance(key, list) or any(isinstance(k, str) and "\x00" in k for k in key):
        raise _bad("cursor", "is not a cursor this API gave out")
    return key


def _bad(field: str, message: str) -> errors.ValidationFailed:
    return errors.ValidationFailed(details=[{"field": field, "message": message}])
