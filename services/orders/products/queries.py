"""SQL of products and their stock. Every value is a parameter; the schema comes from the
search_path."""

from uuid import UUID

import asyncpg

Conn = asyncpg.Connection

PRODUCT = "id, sku, name, price_cents, stock"


async def list_products(conn: Conn, after_sku: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {PRODUCT} FROM products WHERE sku > $1
        ORDER BY sku LIMIT $2
        """,
        after_sku, limit,
    )


async def product(conn: Conn, product_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {PRODUCT} FROM products WHERE id = $1", product_id)


async def insert_product(
    conn: Conn, product_id: UUID, sku: str, name: str, price_cents: int, stock: int
) -> asyncpg.Record:
    """Raises UniqueViolationError when the SKU is taken."""
    return await conn.fetchrow(
        f"""
        INSERT INTO products (id, sku, name, price_cents, stock) VALUES ($1, $2, $3, $4, $5)
        RETURNING {PRODUCT}
        """,
        product_id, sku, name, price_cents, stock,
    )


async def update_product(
    conn: Conn, product_id: UUID, name: str | None, price_cents: int | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        UPDATE products SET name = coalesce($2, name), price_cents = coalesce($3, price_cents),
            updated_at = now()
        WHERE id = $1 RETURNING {PRODUCT}
        """,
        product_id, name, price_cents,
    )


async def adjust_stock(
    conn: Conn, product_id: UUID, delta: int, ceiling: int
) -> asyncpg.Record | None:
    """One conditional statement: the row lock it takes makes concurrent adjustments (and
    orders) queue on the row, and the condition is re-checked on the latest stock."""
    return await conn.fetchrow(
        f"""
        UPDATE products SET stock = stock + $2, updated_at = now()
        WHERE id = $1 AND stock + $2 BETWEEN 0 AND $3 RETURNING {PRODUCT}
        """,
        product_id, delta, ceiling,
    )


