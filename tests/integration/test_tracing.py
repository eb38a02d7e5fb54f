"""Tracing (shopkit/tracing.py) across the whole system, run in this process with the SDK's
in-memory exporter: an order is one trace from the gateway to tracking's consumer, a status
change one trace from the gateway to the notification's SSE send, an event relayed once
RabbitMQ is back still joins the trace of the request that wrote it, and a client's
traceparent continues its trace while a malformed one starts a new one."""

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shopkit import tracing
from shopkit.bootstrap import ServiceDatabase
from tests.conftest import admin_token_for
from tests.harness import (
    System,
    call,
    create_product,
    event_stream,
    eventually,
    new_customer,
    next_sse_event,
    rabbitmq_stopped,
    running_system,
    wait_until_ready,
)

ORDERS_ROUTE = "POST ^/api/orders(/.*)?$"  # the gateway's span, named after its route


@pytest.fixture(scope="module")
async def traced(
    databases: dict[str, ServiceDatabase],
) -> AsyncIterator[tuple[System, InMemorySpanExporter]]:
    """A system of its own, made with tracing on (the server spans come with apps made then)."""
    exporter = InMemorySpanExporter()
    with tracing.traced_in_process(exporter):
        async with running_system(databases) as system:
            async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
                await wait_until_ready(client)
            yield system, exporter


@pytest.fixture
async def shop(
    traced: tuple[System, InMemorySpanExporter], admin_db: asyncpg.Pool
) -> AsyncIterator["Shop"]:
    system, exporter = traced
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        admin = await admin_token_for(system.gateway_url, admin_db)
        token, address_id = await new_customer(client)
        yield Shop(system, exporter, client, admin, token, address_id, admin_db)


class Shop:
    def __init__(self, system: System, exporter: InMemorySpanExporter,
                 client: aiohttp.ClientSession, admin: str, token: str, address_id: str,
                 admin_db: asyncpg.Pool) -> None:
        self.system, self.exporter, self.client = system, exporter, client
        self.admin, self.token, self.address_id, self.admin_db = admin, token, address_id, admin_db

    async def place_order(self, **headers: str) -> str:
        product = await create_product(self.client, self.admin, stock=5)
        status, body = await call(self.client, "POST", "/api/orders", self.token, {
            "addressId": self.address_id, "items": [{"productId": product["id"], "quantity": 1}],
        }, **headers)
        assert status == 201, body
        return body["data"]["id"]

    async def event_id(self, order_id: str, event_type: str) -> str:
        return str(await self.admin_db.fetchval(
            "SELECT event_id FROM orders.outbox WHERE aggregate_id = $1 AND event_type = $2",
            order_id, event_type))

    async def processed(self, event_id: str, queue: str) -> "Trace":
        """The trace of the event, once `queue`'s consumer has handled it."""
        async def found() -> Trace | None:
            trace = Trace.of_event(self.exporter.get_finished_spans(), event_id)
            return trace if trace and trace.processing(queue) else None

        return await eventually(found, deadline_seconds=30)


class Trace:
    """The finished spans of one trace."""

    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self._by_id = {span.context.span_id: span for span in spans}

    @classmethod
    def of_event(cls, spans: tuple[ReadableSpan, ...], event_id: str) -> "Trace | None":
        published = [s for s in spans if s.kind is SpanKind.PRODUCER
                     and _attribute(s, "messaging.message.id") == event_id]
        if not published:
            return None
        trace_id = published[0].context.trace_id
        return cls([s for s in spans if s.context.trace_id == trace_id])

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]

    def processing(self, queue: str) -> ReadableSpan | None:
        return next((s for s in self.spans if s.kind is SpanKind.CONSUMER
                     and _attribute(s, "messaging.destination.name") == queue), None)

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self._by_id.get(span.parent.span_id) if span.parent else None

    def ancestry(self, span: ReadableSpan | None) -> list[str]:
        """The names from the trace's root down to `span`, each the parent of the next."""
        names: list[str] = []
        while span is not None:
            names.insert(0, span.name)
            span = self.parent(span)
        return names

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent and s.parent.span_id == span.context.span_id]


def _attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def _statements(trace: Trace, parent: ReadableSpan) -> list[str]:
    return [str(_attribute(s, "db.statement") or _attribute(s, "db.query.text"))
            for s in trace.children(parent) if _attribute(s, "db.system") == "postgresql"
            or _attribute(s, "db.system.name") == "postgresql"]


# The order's path, as parent and child, from the client's request to tracking's handling.
ORDER_PATH = [ORDERS_ROUTE, "POST", "POST /api/orders", "transaction place order",
              "publish order.created", "process order.created"]


async def test_an_order_is_one_trace_from_the_gateway_to_tracking_s_consumer(
    shop: Shop,
) -> None:
    order_id = await shop.place_order()
    event_id = await shop.event_id(order_id, "order.created")
    trace = await shop.processed(event_id, "tracking.orders")

    tracked = trace.processing("tracking.orders")
    assert trace.ancestry(tracked) == ORDER_PATH
    gateway = trace.one(ORDERS_ROUTE)
    assert gateway.kind is SpanKind.SERVER and gateway.parent is None, "a new trace"
    # Each request's span carries the id its log lines carry, the same in every component.
    request_id = _attribute(gateway, "shop.request_id")
    assert request_id and _attribute(trace.one("POST /api/orders"), "shop.request_id") == (
        request_id)
    assert trace.parent(trace.one("token check")) is gateway
    # The transaction's statement, and tracking's, each under its own span.
    transaction = trace.one("transaction place order")
    assert any("INSERT INTO orders" in sql for sql in _statements(trace, transaction))
    # Tracking applies events in batches: one span per statement, child of its first event's
    # processing (of another trace, when another event came first) and linked to each one's.
    everything = Trace(list(shop.exporter.get_finished_spans()))
    [batch] = [s for s in everything.named("apply batch") if any(
        link.context.span_id == tracked.context.span_id for link in s.links)]
    assert batch.parent is not None and batch.parent.span_id == batch.links[0].context.span_id
    assert any("INSERT INTO trackings" in sql for sql in _statements(everything, batch))


async def test_a_status_change_is_one_trace_down_to_the_notification_s_sse_send(
    shop: Shop,
) -> None:
    order_id = await shop.place_order()
    async with event_stream(shop.system.gateway_url, shop.token) as stream:
        status, body = await call(shop.client, "POST", f"/api/admin/orders/{order_id}/status",
                                  shop.admin, {"status": "confirmed"})
        assert status == 200, body
        notification = await next_sse_event(stream)
    event_id = await shop.event_id(order_id, "order.status_changed")

    async def sent() -> Trace | None:
        trace = await shop.processed(event_id, "notifications.events")
        return trace if trace.processing("tracking.orders") and trace.named(
            "send notification") else None

    trace = await eventually(sent, deadline_seconds=30)
    route = "POST ^/api/admin/(products|orders)(/.*)?$"
    change = [route, "POST", "POST /api/admin/orders/{order_id}/status",
              "transaction move order", "publish order.status_changed"]
    # Both consumers of the event are children of its publish: tracking's, and
    # notifications', under which the notification is created and then sent.
    assert trace.ancestry(trace.processing("tracking.orders")) == [
        *change, "process order.status_changed"]
    created = trace.one("create notification")
    assert trace.ancestry(created) == [*change, "process order.status_changed",
                                       "create notification"]
    assert trace.processing("notifications.events") is trace.parent(created)
    assert any("INSERT INTO notifications" in sql for sql in _statements(trace, created))
    sent_span = trace.one("send notification")
    assert trace.parent(sent_span) is created
    assert _attribute(sent_span, "shop.notification.id") == notification["id"]
    # ... linked to the request of the stream that sent it, a trace of its own (whose span
    # ends once the stream does).
    [link] = sent_span.links

    async def stream_span() -> list[ReadableSpan]:
        return [s for s in shop.exporter.get_finished_spans()
                if s.context.span_id == link.context.span_id]

    [stream_request] = await eventually(stream_span)
    assert stream_request.kind is SpanKind.SERVER
    assert stream_request.name == "GET /api/notifications/stream"
    assert stream_request.context.trace_id != sent_span.context.trace_id


async def test_an_event_relayed_after_rabbitmq_came_back_joins_the_request_s_trace(
    shop: Shop,
) -> None:
    async with rabbitmq_stopped(shop.system):
        order_id = await shop.place_order()
        stored = await shop.admin_db.fetchval(
            "SELECT traceparent FROM orders.outbox WHERE aggregate_id = $1", order_id)
        assert stored and stored.startswith("00-") and stored.endswith("-01")
        # Nothing of the event is traced while it waits: the request's trace stops here.
        written = Trace([s for s in shop.exporter.get_finished_spans()
                         if f"{s.context.trace_id:032x}" == stored.split("-")[1]])
        assert written.named("transaction place order") and not written.named(
            "publish order.created")
    event_id = await shop.event_id(order_id, "order.created")
    trace = await shop.processed(event_id, "tracking.orders")
    assert trace.ancestry(trace.processing("tracking.orders")) == ORDER_PATH
    transaction, published = trace.one("transaction place order"), trace.one(
        "publish order.created")
    assert f"-{transaction.context.span_id:016x}-" in stored
    assert published.start_time > trace.one(ORDERS_ROUTE).end_time, "published later"


async def test_a_client_s_traceparent_continues_its_trace_and_a_malformed_one_starts_anew(
    shop: Shop,
) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    continued = await shop.place_order(traceparent=f"00-{trace_id}-{span_id}-01",
                                       tracestate="client=1")
    malformed = await shop.place_order(traceparent=f"00-{trace_id}-{span_id}-zz")
    for order_id, expected in ((continued, trace_id), (malformed, None)):
        event_id = await shop.event_id(order_id, "order.created")
        trace = await shop.processed(event_id, "tracking.orders")
        gateway = trace.one(ORDERS_ROUTE)
        if expected:
            assert f"{gateway.context.trace_id:032x}" == trace_id
            assert gateway.parent is not None and gateway.parent.is_remote
            assert f"{gateway.parent.span_id:016x}" == span_id
            assert not gateway.context.trace_state, "a client's tracestate is not passed on"
        else:
            assert f"{gateway.context.trace_id:032x}" != trace_id and gateway.parent is None
        # The services got the gateway's context, never the client's header itself.
        orders = trace.one("POST /api/orders")
        assert trace.parent(orders) in trace.children(gateway)
