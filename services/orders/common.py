"""Request and response pieces shared by the orders service's endpoints."""

from typing import Annotated

from pydantic import Field, StrictInt

Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
Cents = Annotated[StrictInt, Field(ge=0, le=100_000_000)]

