from shopkit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    port: int = 8082
