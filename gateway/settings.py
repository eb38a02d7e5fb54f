from pydantic import Field, SecretStr

from shopkit.settings import ComponentSettings


class GatewaySettings(ComponentSettings):
    port: int = 8080
    auth_url: str = "http://127.0.0.1:8081"
    orders_url: str = "http://127.0.0.1:8082"
    tracking_url: str = "http://127.0.0.1:8083"
    notifications_url: str = "http://127.0.0.1:8084"
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    # Kept-alive connections to all upstreams together.
    upstream_connections: int = Field(default=256, ge=1)
    # Only behind a proxy that sets X-Forwarded-For itself; otherwise clients could pick the
    # address their failed sign-ins are counted against.
    trust_forwarded_for: bool = False
    # Validated tokens are remembered this long (0: ask auth every time); every instance
    # evicts a user's tokens on auth.session_revoked, heard over RabbitMQ.
    token_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    token_cache_size: int = Field(default=100_000, ge=1)
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")

    def upstreams(self) -> dict[str, str]:
        return {
            "auth": self.auth_url.rstrip("/"),
            "orders": self.orders_url.rstrip("/"),
            "tracking": self.tracking_url.rstrip("/"),
            "notifications": self.notifications_url.rstrip("/"),
        }
