"""Rules of products and their stock, free of HTTP and SQL."""

# A product's stock stays well inside the 32-bit column, cancellations included.
MAX_STOCK = 1_000_000_000
