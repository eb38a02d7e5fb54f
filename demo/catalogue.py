"""What the demo shop holds: its catalogue, the shopper's address and first order, and how
that order's delivery is tracked. Data only; demo/seed.py puts it in the shop."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    stock: int


def _products(*rows: tuple[str, int, int]) -> tuple[Product, ...]:
    """SKUs numbered DEMO-001, DEMO-002, ... in the order given (the catalogue lists by SKU)."""
    return tuple(Product(f"DEMO-{n:03d}", name, price, stock)
                 for n, (name, price, stock) in enumerate(rows, start=1))


PRODUCTS = _products(
    ("Ceramic Pour-Over Coffee Dripper", 2490, 40),
    ("Stainless Steel French Press, 1 l", 3450, 25),
    ("Single-Origin Coffee Beans, Ethiopia Yirgacheffe, 250 g", 1290, 120),
    ("Burr Coffee Grinder", 8900, 12),
    ("Gooseneck Kettle, 0.9 l", 4590, 18),
    ("Loose-Leaf Green Tea, Sencha, 100 g", 990, 80),
    ("Cast Iron Teapot, 0.8 l", 3990, 15),
    ("Double-Walled Glass Mugs, Set of 2", 2190, 35),
    ("Linen Tea Towels, Set of 3", 1850, 50),
    ("Olive Wood Cutting Board", 3290, 22),
    ("Chef's Knife, 20 cm", 7950, 14),
    ("Enamelled Dutch Oven, 24 cm", 12900, 8),
    ("Silicone Baking Mat", 1190, 60),
    ("Bamboo Utensil Set, 5 pieces", 1590, 45),
    ("Wool Throw Blanket, Charcoal", 6900, 20),
    ("Scented Soy Candle, Cedar and Sage", 1890, 70),
    ("Ceramic Plant Pot, 15 cm", 1450, 55),
    ("Linen Cushion Cover, 45 x 45 cm", 2290, 40),
    ("Wall Clock, Oak, 30 cm", 4490, 10),
    ("Desk Lamp with Dimmer", 5490, 16),
    ("Hardcover Notebook, Dotted, A5", 1590, 90),
    ("Fountain Pen, Medium Nib", 3900, 30),
    ("Canvas Tote Bag", 1290, 100),
    ("Leather Card Holder", 2990, 28),
    ("Insulated Water Bottle, 750 ml", 2790, 65),
    ("Merino Wool Beanie", 2490, 38),
    ("Cotton Crew Socks, 3 Pairs", 1490, 110),
    ("Rain Jacket, Packable", 8990, 15),
    ("Wireless Earbuds", 7990, 25),
    ("USB-C Charging Cable, 2 m", 1290, 150),
    ("Portable Power Bank, 10,000 mAh", 3490, 40),
    ("Bluetooth Speaker, Waterproof", 5990, 20),
    ("Yoga Mat, 4 mm", 3290, 30),
    ("Resistance Bands, Set of 5", 1990, 48),
    ("Jigsaw Puzzle, 1,000 Pieces", 2190, 26),
    ("Wooden Chess Set", 4990, 12),
)

# The shopper's first order: (SKU, quantity).
ORDER_LINES = (("DEMO-001", 1), ("DEMO-003", 2), ("DEMO-025", 1))
ORDER_NOTE = "Please leave the parcel with the neighbours if I am out."
# Fixed for the demo: placing the order again with it gives back the same order, never a second.
ORDER_IDEMPOTENCY_KEY = "demo-shop-first-order"

ADDRESS = {
    "label": "Home",
    "recipient": "Sam Shopper",
    "line1": "12 Harbour Road",
    "line2": "Flat 3",
    "city": "Bristol",
    "postalCode": "BS1 5TY",
    "country": "GB",
    "phone": "+44 117 496 0123",
    "isDefault": True,
}
SHOPPER_NAME = "Sam Shopper"
ADMIN_NAME = "Demo Admin"

# Where the order is: the statuses it is moved through, each with its history note.
STATUS_STEPS = (("confirmed", "Payment received"), ("shipped", "Handed to the carrier"))
CARRIER = "DHL"
DELIVERY_DAYS = 3  # the estimated delivery, counted from the day the details are first set
CHECKPOINT = {"location": "Bristol sorting centre", "note": "Parcel sorted, on its way to you"}
