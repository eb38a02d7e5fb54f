"""Tracing's own rules (shopkit/tracing.py): off unless the standard variables ask for it, and
then nothing of OpenTelemetry loaded; a client's sampled flag never makes the gateway record."""

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from shopkit import tracing

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}


def _untraced_environment(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **extra}


# What a component does with tracing off: configure, make its app, and call the helpers its
# requests and events call; then which modules of OpenTelemetry are loaded.
OFF_PATH = """
import sys
from shopkit import tracing
assert tracing.configure("auth") is False
from services.auth.app import create_app
from services.auth.settings import AuthSettings
create_app(AuthSettings(port=0, metrics_port=0, identity_secret="s" * 32,
                        database_url="postgresql://u:p@127.0.0.1:1/shop"))
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
create_gateway(GatewaySettings(
    auth_identity_secret="a" * 32, orders_identity_secret="o" * 32,
    tracking_identity_secret="t" * 32, notifications_identity_secret="n" * 32))
assert tracing.traceparent() is None and tracing.current() is None
assert tracing.traceparent_in({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
with tracing.span("x"), tracing.span_from("00-" + "1" * 32 + "-" + "2" * 16 + "-01", "y"), \\
        tracing.message_span("p", "process", "t", "i", "q"), tracing.span_for_all([None], "z"):
    tracing.name_request("GET", "/")
    tracing.note_request_id("r")
assert tracing.client_trace_configs() == []
print(",".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""


@pytest.mark.parametrize("environment", [{}, {**ENDPOINT, "OTEL_SDK_DISABLED": "true"}],
                         ids=["no endpoint", "sdk disabled"])
def test_tracing_off_loads_nothing_of_opentelemetry(environment: dict[str, str]) -> None:
    # A fresh interpreter: this one has loaded the SDK for the other tests.
    loaded = subprocess.run(
        [sys.executable, "-c", OFF_PATH], capture_output=True, text=True, check=True,
        env=_untraced_environment(**environment),
    ).stdout.strip()
    assert loaded == ""


def test_the_gateway_traced_still_does_not_load_asyncpg() -> None:
    script = ("import sys; from shopkit import tracing; import gateway.app; "
              "assert tracing.configure('gateway', edge=True); "
              "print('asyncpg' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, env=_untraced_environment(**ENDPOINT)).stdout.strip()
    assert loaded == "False"


@pytest.mark.parametrize(("environment", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "orders"}, False),
    (ENDPOINT, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_tracing_is_on_only_when_the_standard_variables_name_an_endpoint(
    environment: dict[str, str], on: bool
) -> None:
    assert tracing.configured(environment) is on


def _remote_parent(sampled: bool, trace_id: int | None = None) -> Context:
    parent = SpanContext(trace_id or secrets.randbits(128), secrets.randbits(64), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))
    return set_span_in_context(NonRecordingSpan(parent))


def _decision(sampler: object, parent: Context | None, kind: SpanKind,
              trace_id: int = 0x1234) -> Decision:
    return sampler.should_sample(parent, trace_id, "span", kind).decision  # type: ignore[attr-defined]


def test_at_the_edge_a_client_s_sampled_flag_is_not_believed() -> None:
    never_at_the_root = tracing.entry_sampler(ParentBased(ALWAYS_OFF), edge=True)
    assert _decision(never_at_the_root, _remote_parent(True), SpanKind.SERVER) is Decision.DROP
    # ... nor its unsampled one: the gateway decides as for a new trace.
    always = tracing.entry_sampler(ParentBased(ALWAYS_ON), edge=True)
    assert _decision(always, _remote_parent(False), SpanKind.SERVER) is not Decision.DROP
    # A service believes the flag: its parent is the gateway.
    service = tracing.entry_sampler(ParentBased(ALWAYS_OFF), edge=False)
    assert _decision(service, _remote_parent(True), SpanKind.SERVER) is not Decision.DROP


def test_at_the_edge_no_trace_id_a_client_picks_sways_a_ratio() -> None:
    """A trace id whose low bits are 0 is always inside a ratio's bound, were it decided on."""
    rare = tracing.entry_sampler(ParentBased(TraceIdRatioBased(1e-9)), edge=True)
    picked = _remote_parent(True, trace_id=1 << 64)
    assert _decision(rare, picked, SpanKind.SERVER, trace_id=1 << 64) is Decision.DROP


def test_a_trace_begins_only_where_a_request_enters() -> None:
    sampler = tracing.entry_sampler(ParentBased(ALWAYS_ON), edge=False)
    assert _decision(sampler, None, SpanKind.SERVER) is not Decision.DROP
    for kind in (SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER):
        assert _decision(sampler, None, kind) is Decision.DROP, kind
    # ... and joins one it is given (a stored or received traceparent).
    assert _decision(sampler, _remote_parent(True), SpanKind.CONSUMER) is not Decision.DROP


@asynccontextmanager
async def _gateway() -> AsyncIterator[str]:
    """A gateway alone (its services and RabbitMQ unreachable), made while tracing is on."""
    settings = GatewaySettings(
        port=0, metrics_port=0, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/",
        **{f"{name}_url": "http://127.0.0.1:1" for name in ("auth", "orders", "tracking",
                                                            "notifications")},
        **{f"{name}_identity_secret": name[0] * 32
           for name in ("auth", "orders", "tracking", "notifications")},
    )
    runner = web.AppRunner(create_gateway(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("edge", [True, False], ids=["the gateway", "were it a service"])
async def test_a_client_s_sampled_traceparent_makes_the_gateway_record_nothing(
    edge: bool,
) -> None:
    """Sampling configured to record no new trace: a client that says `sampled` is not
    recorded at the gateway (as a service behind it, the flag would be followed)."""
    exporter = InMemorySpanExporter()
    with tracing.traced_in_process(exporter, sampler=ParentBased(ALWAYS_OFF), edge=edge):
        async with _gateway() as url, aiohttp.ClientSession() as client:
            parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
            async with client.get(f"{url}/api/products", headers={"traceparent": parent}):
                pass
    recorded = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(recorded) == (0 if edge else 1)
