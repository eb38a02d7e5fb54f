"""HTTP endpoints of the orders service: addresses, products and stock, orders."""

from services.orders.addresses.routes import routes as address_routes
from services.orders.orders.routes import routes as order_routes
from services.orders.products.routes import routes as product_routes

routes = [*address_routes, *product_routes, *order_routes]
