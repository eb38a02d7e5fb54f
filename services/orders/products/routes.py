"""HTTP endpoints of products and stock: the public catalogue, and the admin's create, update
and stock adjustments."""

import uuid
from typing import Annotated

import asyncpg
from aiohttp import web
from pydantic import Field, StrictInt, StringConstraints, model_validator

from services.orders.products import queries
from services.orders.products.domain import MAX_STOCK
from shopkit import errors
from shopkit.app import POOL_KEY, require_admin
from shopkit.openapi import Access, documented
from shopkit.pagination import FROM_THE_START, Ordering, PageOf, PageQuery, cursor_text
from shopkit.web import ApiModel, from_row, ok, path_id, read_model, read_query

routes = web.RouteTableDef()
BY_SKU = Ordering(("sku",), (cursor_text,), FROM_THE_START)

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
ProductName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
Cents = Annotated[StrictInt, Field(ge=0, le=100_000_000)]


class ProductIn(ApiModel):
    sku: Sku
    name: ProductName
    price_cents: Cents
    stock: Count


class ProductChange(ApiModel):
    name: ProductName | None = None
    price_cents: Cents | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> "ProductChange":
        if self.name is None and self.price_cents is None:
            raise ValueError("give name or priceCents (or both)")
        return self


class StockChange(ApiModel):
    delta: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)]


class Product(ApiModel):
    id: uuid.UUID
    sku: str
    name: str
    price_cents: int
    stock: int


def product_view(row: asyncpg.Record) -> Product:
    return from_row(Product, row)


@routes.get("/api/products")
@documented("The catalogue, by SKU", Access.PUBLIC, answer=PageOf[Product], query=PageQuery)
async def list_products(request: web.Request) -> web.Response:
    page = read_query(request, PageQuery).page()
    after = page.after_key(BY_SKU)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await queries.list_products(conn, *after, page.limit + 1)
    return ok(page.answer(rows, BY_SKU, product_view))


@routes.get("/api/products/{product_id}")
@documented("One product", Access.PUBLIC, answer=Product)
async def get_product(request: web.Request) -> web.Response:
    product_id = path_id(request, "product_id")
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.product(conn, product_id)
    if row is None:
        raise errors.NotFound("No such product.")
    return ok(product_view(row))


@routes.post("/api/admin/products")
@documented("Add a product", Access.ADMIN, body=ProductIn, answer=Product, status=201,
            errors={409: "A product with this SKU exists (`sku_taken`)."})
async def create_product(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_model(request, ProductIn)
    try:
        async with request.app[POOL_KEY].acquire() as conn:
            row = await queries.insert_product(
                conn, uuid.uuid4(), body.sku, body.name, body.price_cents, body.stock
            )
    except asyncpg.UniqueViolationError as exc:
        raise errors.Conflict("A product with this SKU exists.", code="sku_taken") from exc
    return ok(product_view(row), status=201)


@routes.patch("/api/admin/products/{product_id}")
@documented("Rename or reprice a product", Access.ADMIN, body=ProductChange, answer=Product)
async def change_product(request: web.Request) -> web.Response:
    require_admin(request)
    product_id = path_id(request, "product_id")
    body = await read_model(request, ProductChange)
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.update_product(conn, product_id, body.name, body.price_cents)
    if row is None:
        raise errors.NotFound("No such product.")
    return ok(product_view(row))


@routes.post("/api/admin/products/{product_id}/stock")
@documented("Adjust stock by a delta", Access.ADMIN, body=StockChange, answer=Product,
            errors={409: "Stock would go below zero (`insufficient_stock`) or above its "
                         "limit (`stock_limit_exceeded`)."})
async def adjust_stock(request: web.Request) -> web.Response:
    require_admin(request)
    product_id = path_id(request, "product_id")
    body = await read_model(request, StockChange)
    async with request.app[POOL_KEY].acquire() as conn:
        row = await queries.adjust_stock(conn, product_id, body.delta, MAX_STOCK)
        if row is None:
            current = await queries.product(conn, product_id)
    if row is not None:
        return ok(product_view(row))
    if current is None:
        raise errors.NotFound("No such product.")
    if current["stock"] + body.delta > MAX_STOCK:
        raise errors.Conflict(
            f"Stock cannot go above {MAX_STOCK:,}.", code="stock_limit_exceeded"
        )
    raise errors.Conflict(
        f"Stock cannot go below zero: {current['stock']} in stock, change of {body.delta}.",
        code="insufficient_stock",
        details=[{"productId": str(product_id), "sku": current["sku"],
                  "available": current["stock"], "requested": -body.delta}],
    )
