from services.orders.app import NAME, create_app
from services.orders.settings import OrdersSettings
from shopkit.runner import serve

serve(NAME, create_app, OrdersSettings())
