"""An OTLP/HTTP sink for the bench's traced components: accepts `POST /v1/traces` and discards
it, counting what came (`GET /stats`). It stands in for a collector, so that what tracing costs
the components is measured, not a collector's own work or its absence (an exporter whose
endpoint refuses retries and logs).

`python -m bench.otlp_sink --port N`
"""

import argparse

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

STATS_KEY = web.AppKey("stats", dict)
# What the exporter expects back: an empty ExportTraceServiceResponse.
ACCEPTED = ExportTraceServiceResponse().SerializeToString()


async def accept(request: web.Request) -> web.Response:
    body = await request.read()
    stats = request.app[STATS_KEY]
    stats["exports"] += 1
    stats["bytes"] += len(body)
    # The spans are counted, for the bench's spans per request; nothing else is kept.
    exported = ExportTraceServiceRequest.FromString(body)
    stats["spans"] += sum(len(scope.spans) for resource in exported.resource_spans
                          for scope in resource.scope_spans)
    return web.Response(body=ACCEPTED, content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY])


def sink() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS_KEY] = {"exports": 0, "bytes": 0, "spans": 0}
    app.router.add_post("/v1/traces", accept)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(sink(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
