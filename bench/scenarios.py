"""Authenticated reads at full speed (wrk), against nginx and the service called directly; and
the cost of the gateway's vouching, measured alone. The scenarios judged at one offered rate
are in bench/same_rate.py, the latency curves in bench/curve.py."""

import secrets
import time
import uuid

import orjson

from bench.cpu import CpuUse, print_cpu
from bench.load import repeat, wrk
from bench.processes import NGINX_PORT, PORTS
from bench.shop import Customer, signed
from shopkit import tracing
from shopkit.identity import Identity, IdentityKey, Role, sign_identity, verify_identity


def identity_cost(repeats: int = 20_000) -> tuple[float, float]:
    """Microseconds of CPU to sign one identity (the gateway, per proxied request) and to
    verify one (the service), for an order's request with its body."""
    key = IdentityKey("orders", secrets.token_bytes(32))
    caller = Identity(Role.USER, uuid.uuid4(), uuid.uuid4(), "127.0.0.1", time.time() + 3600)
    body = orjson.dumps({"addressId": str(uuid.uuid4()),
                         "items": [{"productId": str(uuid.uuid4()), "quantity": 1}]})
    started = time.process_time()
    for _ in range(repeats):
        header = sign_identity(caller, key, "POST", "/api/orders", body)
    signed_at = time.process_time()
    for _ in range(repeats):
        verify_identity(header, key, "POST", "/api/orders", body, max_age=30)
    verified_at = time.process_time()
    return ((signed_at - started) / repeats * 1e6, (verified_at - signed_at) / repeats * 1e6)


def tracing_off_cost(repeats: int = 100_000) -> float:
    """Microseconds of CPU that tracing, off, adds to one order: each helper of
    shopkit.tracing its path calls (at the gateway, in orders, in the relay, in tracking's
    consumer), as it calls them, measured alone in this process, where tracing is off."""
    assert not tracing.is_on()
    headers = {"x-request-id": "bench"}
    started = time.process_time()
    for _ in range(repeats):
        tracing.note_request_id("bench")  # at the gateway, and again in orders
        tracing.note_request_id("bench")
        tracing.name_request("POST", "^/api/orders(/.*)?$")
        with tracing.span("token check"):
            pass
        with tracing.span("transaction place order"):
            tracing.traceparent()  # the event's row
        with tracing.message_span(None, "publish", "order.created", "id", "shop.events"):
            tracing.traceparent()  # the message's header
        with tracing.message_span(tracing.traceparent_in(headers), "process", "order.created",
                                  "id", "tracking.orders"):
            tracing.current()  # the batch's
        with tracing.span_for_all([None], "apply batch", **{"shop.batch.events": 1}):
            pass
    return (time.process_time() - started) / repeats * 1e6


def authenticated_reads(customer: Customer, runs: int, seconds: int) -> list[tuple[str, list]]:
    results = []
    bearer = {"Authorization": f"Bearer {customer.token}"}
    for label, path, service in (("GET /api/users/me", "/api/users/me", "auth"),
                                 ("GET /api/orders", "/api/orders?limit=20", "orders")):
        print(f"{label}, {runs} runs of {seconds} s, 2 threads, 50 connections", flush=True)
        # A signed identity is good for IDENTITY_MAX_AGE_SECONDS: one is made for each run.
        targets = (("gateway", PORTS["gateway"], lambda: bearer),
                   ("nginx auth_request", NGINX_PORT, lambda: bearer),
                   (f"{service} directly", PORTS[service],
                    lambda s=service, p=path: signed(customer, s, p)))
        summaries = []
        for name, port, headers in targets:
            cpu: list[CpuUse] = []
            summaries.append(repeat(
                name, runs, seconds,
                lambda t, u=f"http://127.0.0.1:{port}{path}", h=headers: wrk(u, h(), t, 50),
                cpu))
            print_cpu(cpu, "request")
        results.append((label, summaries))
    return results
