"""Typed settings read from the environment (12-factor): one class per component.

A setting may also come from a file named after it (`database_url`, `identity_secret`, ...) in
the directory SECRETS_DIR names: how Kubernetes hands over secrets without putting them in the
environment (deploy/). A variable set in the environment wins over the file.
"""

import os
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# How every settings class of the shop reads: unknown variables ignored, secrets from files too.
READING = SettingsConfigDict(extra="ignore", secrets_dir=os.environ.get("SECRETS_DIR") or None)


class ComponentSettings(BaseSettings):
    """What every component reads, the gateway included."""

    model_config = SettingsConfigDict(**READING, frozen=True)

    host: str = "127.0.0.1"
    port: int
    # Prometheus metrics are served on a listener of their own, never on the API's port: an
    # operator's scraper reaches it, clients do not.
    metrics_host: str = "127.0.0.1"
    metrics_port: int
    log_level: str = "INFO"
    # How long in-flight requests may take to finish on SIGTERM before the process exits.
    shutdown_timeout_seconds: float = 10.0
    # A client connection that has not sent a whole request line and headers within this time
    # of connecting (or of its previous response) is closed: idle keep-alive connections and
    # clients trickling headers alike.
    client_idle_timeout_seconds: float = Field(default=15.0, gt=0)
    # A request body that has not fully arrived within this time is refused (408) and its
    # connection closed, so trickling a body holds nothing for long.
    body_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # uvloop's event loop (libuv) runs the same code with less overhead per I/O event than
    # asyncio's own; `asyncio` is there to compare them (make bench) or to rule uvloop out.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


class ServiceSettings(ComponentSettings):
    """What every service with its own schema reads."""

    # The key this service shares with the gateway alone (shopkit.identity): with it the
    # service checks the gateway's vouching, and can vouch to no other service.
    identity_secret: SecretStr = Field(min_length=32)
    identity_max_age_seconds: float = 30.0
    # The service's own login role; never a superuser. Several hosts with
    # target_session_attrs=read-write (whichever takes writes now), or a PgBouncer.
    database_url: SecretStr
    # asyncpg's prepared statements kept per connection; 0 through a PgBouncer in transaction
    # pooling mode, which cannot keep a statement prepared on one server connection for the
    # next transaction (asyncpg then sends each query as an unnamed statement).
    db_statement_cache_size: int = Field(default=100, ge=0)
    # The service's own RabbitMQ user, allowed to publish its own events and read its own
    # queues only (shopkit.broker_access).
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    # Bounds every query, so a stalled database answers 503 instead of hanging a request.
    db_command_timeout_seconds: float = 5.0
    db_connect_timeout_seconds: float = 5.0
    # How long a starting process waits for Postgres before it gives up.
    startup_timeout_seconds: float = 60.0
    # The relay is woken by its own process's writes (shopkit.outbox); the poll finds what
    # other processes wrote and could not publish.
    outbox_poll_interval_seconds: float = Field(default=1.0, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1, le=1000)
    # Event consumers: unacknowledged messages in flight, and how a failing one is retried
    # (delay doubling from the first) before it goes to the dead-letter queue.
    consumer_prefetch: int = Field(default=100, ge=1, le=1000)
    consumer_max_retries: int = Field(default=5, ge=0)
    consumer_retry_delay_seconds: float = Field(default=0.5, gt=0)
