from dataclasses import dataclass

from pydantic import Field, SecretStr, model_validator

from shopkit.identity import IdentityKey
from shopkit.settings import ComponentSettings


@dataclass(frozen=True)
class Upstream:
    """A service behind the gateway: where it listens, and the key the gateway vouches with."""

    url: str
    key: IdentityKey


class GatewaySettings(ComponentSettings):
    port: int = 8080
    metrics_port: int = 9080
    auth_url: str = "http://127.0.0.1:8081"
    orders_url: str = "http://127.0.0.1:8082"
    tracking_url: str = "http://127.0.0.1:8083"
    notifications_url: str = "http://127.0.0.1:8084"
    # One key per service, each shared with that service alone (shopkit.identity).
    auth_identity_secret: SecretStr = Field(min_length=32)
    orders_identity_secret: SecretStr = Field(min_length=32)
    tracking_identity_secret: SecretStr = Field(min_length=32)
    notifications_identity_secret: SecretStr = Field(min_length=32)
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    # Kept-alive connections to all upstreams together, for requests (streams have their own).
    upstream_connections: int = Field(default=256, ge=1)
    # How long an idle connection to a service is kept: below the services'
    # CLIENT_IDLE_TIMEOUT_SECONDS, so the gateway, not the service, closes an idle one (a
    # service closing it just as the gateway sends on it would fail that request).
    upstream_keepalive_seconds: float = Field(default=10.0, gt=0)
    # Requests one client address may have in flight at this instance (event streams aside);
    # past it, 429 until one is answered, so one client cannot hold every connection.
    max_requests_per_client: int = Field(default=64, ge=1)
    # Event streams this instance proxies at once, on connections apart from the requests'
    # (so no number of streams can take a request's connection); past it, 503.
    max_streams: int = Field(default=1000, ge=1)
    # How many proxies in front of the gateway append to X-Forwarded-For; the client address
    # is the entry the outermost of them wrote, counted from the right. 0: the socket's peer.
    # Only with every client coming through those proxies; otherwise clients could pick the
    # address their failed sign-ins are counted against.
    trusted_proxies: int = Field(default=0, ge=0, le=10)
    # GET /api/ping and GET /api/openapi.json ask every service; an answer is reused this long
    # so that anonymous callers cannot multiply the load on the services through them.
    fanout_cache_seconds: float = Field(default=1.0, ge=0, le=2)
    # Validated tokens are remembered this long (0: ask auth every time); every instance
    # evicts a user's tokens on auth.session_revoked, heard over RabbitMQ.
    token_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    token_cache_size: int = Field(default=100_000, ge=1)
    # The gateway's own RabbitMQ user: it may only hear auth.session_revoked, never publish.
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")

    @model_validator(mode="after")
    def _a_key_per_service(self) -> "GatewaySettings":
        secrets = [upstream.key.secret for upstream in self.upstreams().values()]
        if len(set(secrets)) != len(secrets):
            raise ValueError("every service needs an identity secret of its own")
        return self

    def upstreams(self) -> dict[str, Upstream]:
        return {
            name: Upstream(url.rstrip("/"), IdentityKey(name, secret.get_secret_value().encode()))
            for name, url, secret in (
                ("auth", self.auth_url, self.auth_identity_secret),
                ("orders", self.orders_url, self.orders_identity_secret),
                ("tracking", self.tracking_url, self.tracking_identity_secret),
                ("notifications", self.notifications_url, self.notifications_identity_secret),
            )
        }
