"""Request and response pieces shared by the orders service's endpoints."""

from typing import Annotated
from uuid import UUID

from pydantic import Field, StrictInt

from shopkit import errors

Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
Cents = Annotated[StrictInt, Field(ge=0, le=100_000_000)]


def uuid_or_404(text: str) -> UUID:
    """A malformed id names nothing that exists: 404, like an unknown one."""
    try:
        return UUID(text)
    except ValueError as exc:
        raise errors.NotFound() from exc
