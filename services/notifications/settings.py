from shopkit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    port: int = 8084
