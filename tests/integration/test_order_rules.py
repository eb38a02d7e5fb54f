"""The stock rule, written twice on purpose: the statement that places an order applies it on
the locked rows (one round trip), and domain.check_stock names what was wrong when it did not
place one. These tests hold the two together over every case of a two-line order."""

import itertools
import uuid

import aiohttp
import asyncpg
import pytest

from services.orders.orders import domain, queries
from shopkit.app import POOL_KEY
from tests.harness import System, create_address, create_product

STOCKS = (0, 1, 2)
QUANTITIES = (1, 2, 3)


class _RolledBack(Exception):
    """Ends a transaction that must leave nothing behind."""


async def _place_and_roll_back(
    conn: asyncpg.Connection, placement: domain.Placement, stocks: dict[uuid.UUID, int]
) -> asyncpg.Record:
    row = None
    try:
        async with conn.transaction():
            for product_id, stock in stocks.items():
                await conn.execute(
                    "UPDATE products SET stock = $2 WHERE id = $1", product_id, stock
                )
            row = await queries.place_order(conn, placement, None)
            raise _RolledBack
    except _RolledBack:
        pass
    assert row is not None
    return row


def _placement(user_id: uuid.UUID, address_id: uuid.UUID, lines: list[domain.Line]) -> (
    domain.Placement
):
    return domain.Placement(
        order_id=uuid.uuid4(), user_id=user_id, address_id=address_id, lines=tuple(lines),
        note=None, idempotency_key=None, fingerprint=b"", max_open=1000,
    )


@pytest.fixture
async def two_products(
    client: aiohttp.ClientSession, admin_token: str, user_token: str, admin_db: asyncpg.Pool
) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """A user, one of their addresses, and two products."""
    address = uuid.UUID((await create_address(client, user_token))["id"])
    user_id = await admin_db.fetchval(
        "SELECT user_id FROM orders.addresses WHERE id = $1", address
    )
    products = [uuid.UUID((await create_product(client, admin_token, stock=0))["id"])
                for _ in range(2)]
    return user_id, address, products


async def test_the_statement_places_exactly_the_orders_the_domain_finds_in_stock(
    system: System, two_products: tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]
) -> None:
    user_id, address, (first, second) = two_products
    cases = list(itertools.product(STOCKS, STOCKS, QUANTITIES, QUANTITIES))
    async with system.apps["orders"][POOL_KEY].acquire() as conn:
        for first_stock, second_stock, first_quantity, second_quantity in cases:
            stocks = {first: first_stock, second: second_stock}
            lines = [domain.Line(first, first_quantity), domain.Line(second, second_quantity)]
            row = await _place_and_roll_back(conn, _placement(user_id, address, lines), stocks)
            locked = {p[0]: domain.StockedProduct(*p) for p in row["products"] or []}
            expected_short = [
                (line.product_id, line.quantity, stocks[line.product_id])
                for line in lines if stocks[line.product_id] < line.quantity
            ]
            if not expected_short:
                assert row["id"] is not None, (stocks, lines)
                continue
            assert row["id"] is None, (stocks, lines)
            with pytest.raises(domain.OutOfStock) as short:
                domain.check_stock(lines, locked)
            assert [(s.product_id, s.requested, s.available)
                    for s in short.value.shortages] == expected_short


async def test_the_statement_places_nothing_for_a_product_the_domain_finds_unknown(
    system: System, two_products: tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]
) -> None:
    user_id, address, (known, _) = two_products
    unknown = uuid.uuid4()
    lines = [domain.Line(known, 1), domain.Line(unknown, 1)]
    async with system.apps["orders"][POOL_KEY].acquire() as conn:
        row = await _place_and_roll_back(conn, _placement(user_id, address, lines), {known: 5})
    assert row["id"] is None
    with pytest.raises(domain.UnknownProducts) as exc:
        domain.check_stock(lines, {p[0]: domain.StockedProduct(*p) for p in row["products"]})
    assert exc.value.product_ids == [unknown]
