from pydantic import Field

from shopkit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    port: int = 8084
    # Comments sent on an idle stream so proxies and clients keep the connection open.
    sse_ping_interval_seconds: float = Field(default=15.0, gt=0)
