"""What the operations panel shows (`GET /api/admin/operations` on the gateway): each
component's readiness, each service's outbox backlog, each consumer's dead-letter queue.

Each service answers for its own part at OPERATIONS_PATH (shopkit.app), to the gateway alone
(the path is in no route of the gateway's table) and for an admin's identity only; the
gateway asks every service at once and adds the readiness it asks for `/api/ping`. The shapes
of both answers are here, once. Models only: the gateway reads this module too, and must not
load the database driver.
"""

from shopkit.web import ApiModel

OPERATIONS_PATH = "/internal/operations"
# How long a service gives Postgres or RabbitMQ to tell it its part: shorter than the
# gateway's wait for the service (gateway.upstream.OPERATIONS_TIMEOUT_SECONDS), so a
# dependency that hangs shows as unknown while the service's other parts still arrive.
PART_TIMEOUT_SECONDS = 1.0


class OutboxBacklog(ApiModel):
    """Events written and not yet published; both null when they cannot be counted."""

    unsent: int | None
    # null when nothing waits
    oldest_unsent_age_seconds: float | None


UNKNOWN_BACKLOG = OutboxBacklog(unsent=None, oldest_unsent_age_seconds=None)


class DeadLetterQueue(ApiModel):
    queue: str
    messages: int | None  # null when it cannot be read


class ServiceOperations(ApiModel):
    """One service's own part, at OPERATIONS_PATH."""

    outbox: OutboxBacklog
    dead_letters: list[DeadLetterQueue]


class ServiceOperationsAnswer(ApiModel):
    """The service's answer as the gateway reads it: the contract's envelope."""

    data: ServiceOperations


class ComponentReadiness(ApiModel):
    name: str
    ready: bool  # its /health/ready passed


class ServiceOutbox(ApiModel):
    service: str
    unsent: int | None
    oldest_unsent_age_seconds: float | None


class Operations(ApiModel):
    """The whole panel: the gateway first, then the services in the gateway's upstream order."""

    components: list[ComponentReadiness]
    outboxes: list[ServiceOutbox]
    dead_letters: list[DeadLetterQueue]
