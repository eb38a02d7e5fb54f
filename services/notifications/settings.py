from pydantic import Field, SecretStr

from shopkit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    port: int = 8084
    metrics_port: int = 9084
    # Comments sent on an idle stream so proxies and clients keep the connection open.
    sse_ping_interval_seconds: float = Field(default=15.0, gt=0)
    # Open event streams one user may have, on all instances together (past it, 429), and that
    # one instance serves, for all users together (past it, 503).
    max_streams_per_user: int = Field(default=5, ge=1)
    max_streams_per_instance: int = Field(default=1000, ge=1)
    # An open stream is recorded for the per-user count and renewed a few times within this
    # time; one that an instance stopped renewing (it died) stops counting once it is past.
    stream_lease_seconds: float = Field(default=60.0, ge=3)
    # Where the stream hub LISTENs: Postgres itself, when DATABASE_URL is a PgBouncer in
    # transaction pooling mode (a LISTEN outlives the transaction, which such a pooler cannot
    # keep). By default DATABASE_URL.
    listen_database_url: SecretStr | None = None
