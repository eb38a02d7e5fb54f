"""HTTP endpoints of addresses: CRUD plus `/default`."""

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from asyncpg import Connection, Record
from pydantic import Field, StringConstraints, field_validator

from services.orders.addresses import queries
from services.orders.addresses.domain import ADDRESS_FIELDS, ISO_3166_ALPHA_2
from shopkit import errors
from shopkit.app import POOL_KEY, require_user
from shopkit.openapi import Access, documented
from shopkit.pagination import (
    NEWEST_FIRST_BY_SEQUENCE,
    PageOf,
    PageQuery,
)
from shopkit.web import ApiModel, from_row, ok, path_id, read_model, read_query

routes = web.RouteTableDef()


Label = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Street = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
OptionalStreet = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
PostalCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]


class AddressIn(ApiModel):
    label: Label = ""
    recipient: Name
    line1: Street
    line2: OptionalStreet | None = None
    city: Name
    postal_code: PostalCode
    country: str
    phone: Annotated[str, Field(pattern=r"^\+?[0-9][0-9 ()./-]{2,29}$")] | None = None
    is_default: bool = False

    @field_validator("country")
    @classmethod
    def _iso_country(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in ISO_3166_ALPHA_2:
            raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. DE or US")
        return code

    def fields(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in ADDRESS_FIELDS}


class Address(ApiModel):
    id: uuid.UUID
    label: str
    recipient: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country: str
    phone: str | None
    is_default: bool
    created_at: datetime


class Deleted(ApiModel):
    id: uuid.UUID
    deleted: bool


def address_view(row: Record) -> Address:
    return from_row(Address, row)


async def _lock_own(conn: Connection, user_id: uuid.UUID, address_id: uuid.UUID) -> None:
    """Takes the user's address lock, then makes sure the address is theirs (404 otherwise)."""
    await queries.lock_addresses_of(conn, user_id)
    if await queries.address_of(conn, user_id, address_id) is None:
        raise errors.NotFound("No such address.")


@routes.get("/api/addresses")
@documented("Your addresses, newest first", Access.USER, answer=PageOf[Address], query=PageQuery)
async def list_addresses(request: web.Request) -> web.Response:
    caller = require_user(request)
    page = read_query(request, PageQuery).page()
    after = page.after_key(NEWEST_FIRST_BY_SEQUENCE)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.list_addresses(conn, caller.user_id, after, page.limit + 1)
    return ok(page.answer(rows, NEWEST_FIRST_BY_SEQUENCE, address_view))


@routes.post("/api/addresses")
@documented("Add an address (your first one becomes the default)", Access.USER, body=AddressIn,
            answer=Address, status=201)
async def create_address(request: web.Request) -> web.Response:
    caller = require_user(request)
    body = await read_model(request, AddressIn)
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        await queries.lock_addresses_of(conn, caller.user_id)
        first = not await queries.has_addresses(conn, caller.user_id)
        row = await queries.insert_address(
            conn, uuid.uuid4(), caller.user_id, body.fields(), is_default=first
        )
        if body.is_default and not first:
            row = await queries.move_default(conn, caller.user_id, row["id"])
    return ok(address_view(row), status=201)


@routes.get("/api/addresses/{address_id}")
@documented("One of your addresses", Access.USER, answer=Address)
async def get_address(request: web.Request) -> web.Response:
    caller = require_user(request)
    address_id = path_id(request, "address_id")
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.address_of(conn, caller.user_id, address_id)
    if row is None:
        raise errors.NotFound("No such address.")
    return ok(address_view(row))


@routes.put("/api/addresses/{address_id}")
@documented("Replace an address", Access.USER, body=AddressIn, answer=Address)
async def replace_address(request: web.Request) -> web.Response:
    """Replaces the fields. `isDefault: true` moves the default here; `false` never leaves the
    user without one, so on the current default it changes nothing."""
    caller = require_user(request)
    address_id = path_id(request, "address_id")
    body = await read_model(request, AddressIn)
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        await _lock_own(conn, caller.user_id, address_id)
        row = await queries.update_address(conn, address_id, body.fields())
        if body.is_default and not row["is_default"]:
            row = await queries.move_default(conn, caller.user_id, address_id)
    return ok(address_view(row))


@routes.post("/api/addresses/{address_id}/default")
@documented("Make an address your default", Access.USER, answer=Address)
async def make_default(request: web.Request) -> web.Response:
    caller = require_user(request)
    address_id = path_id(request, "address_id")
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        await _lock_own(conn, caller.user_id, address_id)
        row = await queries.move_default(conn, caller.user_id, address_id)
    return ok(address_view(row))


@routes.delete("/api/addresses/{address_id}")
@documented("Delete an address (the newest other one becomes the default)", Access.USER,
            answer=Deleted)
async def delete_address(request: web.Request) -> web.Response:
    caller = require_user(request)
    address_id = path_id(request, "address_id")
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        await queries.lock_addresses_of(conn, caller.user_id)
        was_default = await queries.delete_address(conn, caller.user_id, address_id)
        if was_default is None:
            raise errors.NotFound("No such address.")
        if was_default:
            await queries.promote_newest(conn, caller.user_id)
    return ok(Deleted(id=address_id, deleted=True))
