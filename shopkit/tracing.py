"""Tracing with OpenTelemetry: off unless configured; on, one trace per request, from the
gateway through the services and their statements, the outbox, RabbitMQ and the SSE delivery.

Configured means that the standard variables name an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and that neither
`OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns the SDK off. The SDK reads the
rest as it always does: `OTEL_SERVICE_NAME` (by default the component's name),
`OTEL_TRACES_SAMPLER` and `_ARG`, the exporter's headers and timeouts. Off, this module imports
nothing of OpenTelemetry (every component must stay under 60 MiB resident,
docs/performance.md), no middleware is added, and each helper returns at its first line.

How the spans join (docs/tracing.md):
- a request: the aiohttp server instrumentation's span in each component; at the gateway the
  token check and each call to a service (the aiohttp client instrumentation, which sends
  the call's `traceparent`); in a service each statement (the asyncpg instrumentation);
- an event: its outbox row stores the `traceparent` of the span that wrote it; the relay
  publishes it in a span child of that and sends that span's `traceparent` with the message;
  each consumer handles it in a span child of the message's; a notification stores its
  creation's, and its SSE send is a child of that, however late each step comes.

Sampling (`entry_sampler`): a trace begins only where a request enters, a SERVER span without
a parent; any other span without one (a background statement, an event of no trace) is not
recorded. The gateway keeps a client's trace id, but decides sampling as for a new trace: a
client cannot make the shop record its requests, nor stop it.
"""

import os
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only for the types: none of it is imported while tracing is off
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

TRACEPARENT = "traceparent"
# What no client makes, left out of the server spans unless the operator says otherwise
# (OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS, or OTEL_PYTHON_EXCLUDED_URLS): probes, scrapes.
UNTRACED_PATHS = "^/health/,^/metrics$"
_EXCLUDED_URLS = ("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")

Kind = Literal["internal", "producer", "consumer"]
_OFF: AbstractContextManager[Any] = nullcontext()


class _On:
    """What the helpers use once tracing is on; made by `_start` alone."""

    def __init__(self, provider: "TracerProvider", instrumentors: list[Any]) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.instrumentors = instrumentors
        self.tracer = provider.get_tracer("shopkit")
        self.trace = trace
        self.context = context
        self.propagator = TraceContextTextMapPropagator()
        self.kinds = {"internal": trace.SpanKind.INTERNAL, "producer": trace.SpanKind.PRODUCER,
                      "consumer": trace.SpanKind.CONSUMER}


_on: _On | None = None


def is_on() -> bool:
    return _on is not None


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for tracing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def configure(component: str, edge: bool = False) -> bool:
    """Turns tracing on for this process when the variables ask for it; returns whether it
    is on. Called once, before the app is made (shopkit.runner): the server spans come with
    every aiohttp app made after it. `edge`: the component clients reach (the gateway),
    which decides sampling itself and has no database; the others are services."""
    if _on is not None or not configured():
        return _on is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = _provider(component, edge)
    # Spans leave in batches from a thread of the SDK's, never on the event loop.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _start(provider, database=not edge)
    return True


@contextmanager
def traced_in_process(
    exporter: "SpanExporter", sampler: "Sampler | None" = None, edge: bool = True
) -> Iterator["TracerProvider"]:
    """For tests, whose components all run in one process: tracing on, each span handed to
    `exporter` as it ends; off again afterwards. Only apps made inside get server spans.
    The process's global provider is left alone (it can be set only once)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = _provider("shop", edge, sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _start(provider, database=True)
    try:
        yield provider
    finally:
        _stop()
        provider.shutdown()


def _provider(component: str, edge: bool, sampler: "Sampler | None" = None) -> "TracerProvider":
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES first
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: component}))
    # Without a sampler, the SDK makes the one OTEL_TRACES_SAMPLER names; the kit's rules wrap it.
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.sampler = entry_sampler(provider.sampler, edge)
    return provider


def _start(provider: "TracerProvider", database: bool) -> None:
    global _on
    from opentelemetry import propagate
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # W3C trace context only: a client's `baggage` is neither read nor passed on.
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    if not any(os.environ.get(name) for name in _EXCLUDED_URLS):
        os.environ[_EXCLUDED_URLS[0]] = UNTRACED_PATHS  # read by the instrumentation
    instrumentors: list[Any] = [AioHttpServerInstrumentor()]
    if database:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentors.append(AsyncPGInstrumentor())
    with warnings.catch_warnings():
        # aiohttp discourages subclassing its Application; the instrumentation's subclass
        # only puts its middleware first, in every app made from now on.
        warnings.filterwarnings("ignore", "Inheritance class", DeprecationWarning)
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider)
    _on = _On(provider, instrumentors)


def _stop() -> None:
    global _on
    if _on is not None:
        for instrumentor in _on.instrumentors:
            instrumentor.uninstrument()
        _on = None


def entry_sampler(configured_sampler: "Sampler", edge: bool) -> "Sampler":
    """The kit's rules around the configured sampler (by default parentbased_always_on):
    - a span without a parent is recorded only if it is a request's (SERVER): a trace begins
      where a request enters, never at a background statement or an event of no trace;
    - at the edge, a request whose client sent a `traceparent` keeps its trace id, but is
      sampled as a new trace would be, decided on a trace id of our own: the client's sampled
      flag is not believed, and no trace id it picks can sway a ratio;
    - everything else, as the configured sampler says (parent-based: as the parent was).
    """
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class EntrySampler(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: Any = None, attributes: Any = None, links: Any = None,
                          trace_state: Any = None) -> SamplingResult:
            parent = get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                if kind is not SpanKind.SERVER:
                    return SamplingResult(Decision.DROP)
            elif edge and parent.is_remote and kind is SpanKind.SERVER:
                return configured_sampler.should_sample(
                    Context(), random.getrandbits(128), name, kind, attributes, links)
            return configured_sampler.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"EntrySampler{{{configured_sampler.get_description()},edge={edge}}}"

    return EntrySampler()


# -- the helpers the kit calls; each returns at once while tracing is off ----------------------


def traceparent() -> str | None:
    """The current span's W3C `traceparent`, to store with a row or send with a message; None
    when tracing is off or the span is not sampled (nothing joins a trace not recorded)."""
    if _on is None:
        return None
    span = _on.trace.get_current_span().get_span_context()
    if not (span.is_valid and span.trace_flags.sampled):
        return None
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-01"


def traceparent_in(headers: Mapping[str, Any] | None) -> str | None:
    """The `traceparent` a message came with (AMQP header values may arrive as bytes)."""
    if _on is None or not headers:
        return None
    value = headers.get(TRACEPARENT)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span of the kit's own, child of the current one (outside a trace it is not recorded)."""
    if _on is None:
        return _OFF
    return _on.tracer.start_as_current_span(name, attributes=attributes)


def span_from(
    parent: str | None, name: str, kind: Kind = "internal", **attributes: Any
) -> AbstractContextManager[Any]:
    """A span child of a stored or received `traceparent` (an outbox row's, a message's, a
    notification's), linked to the span current here if any (the SSE stream that sends it).
    Without one, or with a malformed one, there is no trace to join, and no span."""
    if _on is None or not parent:
        return _OFF
    context = _on.propagator.extract({TRACEPARENT: parent})
    here = _on.trace.get_current_span().get_span_context()
    return _on.tracer.start_as_current_span(
        name, context=context, kind=_on.kinds[kind], attributes=attributes,
        links=[_on.trace.Link(here)] if here.is_valid else (),
    )


def message_span(
    parent: str | None, operation: Literal["publish", "process"], event_type: str,
    event_id: str, destination: str,
) -> AbstractContextManager[Any]:
    """An event's publish (by the relay, to the exchange) or its processing (by a consumer,
    from its queue), child of the trace the event came with: `span_from`, named and described
    as OpenTelemetry's messaging conventions say."""
    if _on is None or not parent:
        return _OFF
    return span_from(
        parent, f"{operation} {event_type}", "producer" if operation == "publish" else "consumer",
        **{"messaging.system": "rabbitmq", "messaging.operation.name": operation,
           "messaging.operation.type": "send" if operation == "publish" else "process",
           "messaging.destination.name": destination, "messaging.message.id": event_id,
           "messaging.rabbitmq.destination.routing_key": event_type},
    )


def current() -> Any:
    """The context now, for work another task does on its behalf (a batch); None when off."""
    return None if _on is None else _on.context.get_current()


def span_for_all(contexts: Sequence[Any], name: str, **attributes: Any
                 ) -> AbstractContextManager[Any]:
    """One span for work done for several (a batch of events, each from `current()`): a child
    of the first one's span, linked to every one's. Without any, none."""
    if _on is None:
        return _OFF
    spans = [_on.trace.get_current_span(c) for c in contexts if c is not None]
    traced = [s.get_span_context() for s in spans if s.get_span_context().is_valid]
    if not traced:
        return _OFF
    return _on.tracer.start_as_current_span(
        name, context=_on.trace.set_span_in_context(_on.trace.NonRecordingSpan(traced[0])),
        attributes=attributes, links=[_on.trace.Link(s) for s in traced],
    )


def note_request_id(request_id: str) -> None:
    """Puts the request's id (the one its log lines carry) on its span: logs and traces meet."""
    if _on is not None:
        _on.trace.get_current_span().set_attribute("shop.request_id", request_id)


def name_request(method: str, route: str) -> None:
    """Names the current request's span after its route (the gateway proxies every path
    through one catch-all handler, whose name says nothing)."""
    if _on is not None:
        _on.trace.get_current_span().update_name(f"{method} {route}")


def client_trace_configs() -> list[Any]:
    """For an aiohttp ClientSession: a CLIENT span per call, its `traceparent` sent with it."""
    if _on is None:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config(tracer_provider=_on.provider)]
