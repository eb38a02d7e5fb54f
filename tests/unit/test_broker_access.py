"""Each component's RabbitMQ rights, as regular expressions RabbitMQ matches names against."""

import re

import pytest

from services.bootstrap import SUBSCRIPTIONS_OF
from shopkit.broker_access import gateway_access, management_url_for, service_access, vhost_of


def _allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


@pytest.mark.parametrize(("service", "own", "others"), [
    ("auth", ["auth.session_revoked"], ["order.created", "tracking.updated"]),
    ("orders", ["order.created", "order.status_changed"], ["auth.session_revoked",
                                                           "tracking.updated"]),
    ("tracking", ["tracking.updated"], ["order.created", "auth.session_revoked"]),
    ("notifications", [], ["order.created", "tracking.updated", "auth.session_revoked"]),
])
def test_a_service_publishes_its_own_event_types_only(
    service: str, own: list[str], others: list[str]
) -> None:
    access = service_access(service, SUBSCRIPTIONS_OF[service])
    assert all(_allows(access.topic_write, key) for key in own)
    assert not any(_allows(access.topic_write, key) for key in others)
    assert access.configure == "^$"
    assert not _allows(access.write, "amq.default"), "the default exchange reaches every queue"


def test_a_consumer_reads_its_own_queues_and_writes_only_its_requeue_exchange() -> None:
    access = service_access("tracking", SUBSCRIPTIONS_OF["tracking"])
    for queue in ("tracking.orders", "tracking.orders.dlq"):
        assert _allows(access.read, queue)
    for other in ("notifications.events", "tracking.orders.retry", "shop.events",
                  "tracking.orders.requeue"):
        assert not _allows(access.read, other), other
    assert _allows(access.write, "tracking.orders.requeue")
    assert _allows(access.write, "shop.events")
    assert not _allows(access.write, "notifications.events.requeue")


def test_the_gateway_hears_revocations_and_publishes_nothing() -> None:
    access = gateway_access()
    assert _allows(access.configure, "gateway.revocations.0123abcd")
    assert not _allows(access.configure, "gateway.other")
    assert not _allows(access.write, "shop.events")
    assert _allows(access.read, "shop.events")
    assert _allows(access.topic_read, "auth.session_revoked")
    assert not _allows(access.topic_read, "#") and not _allows(access.topic_read, "order.created")


def test_urls() -> None:
    assert vhost_of("amqp://u:p@h:5672/") == "/"
    assert vhost_of("amqp://u:p@h:5672/shop_test") == "shop_test"
    assert vhost_of("amqp://u:p@h/%2Fother") == "/other"
    assert management_url_for("amqp://admin:s3cret@broker:5672/x") == (
        "http://admin:s3cret@broker:15672"
    )
