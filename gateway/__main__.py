from gateway.app import create_app
from gateway.settings import GatewaySettings
from shopkit.runner import serve

serve("gateway", create_app, GatewaySettings(), edge=True)
