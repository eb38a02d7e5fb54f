"""docs/benchmarks.md, written from one run's results, with the targets judged. Every target is
a ratio to something measured in the same run: nginx, a bare ceiling, or the service called
directly."""

import datetime
import os
from dataclasses import dataclass

from bench.cpu import CpuUse, cpu_summary
from bench.curve import Point
from bench.load import Summary
from bench.processes import (
    BARE_PROXY,
    OTLP_SINK,
    PORTS,
    QUIET_GATEWAY,
    TRACED,
    TRACED_GATEWAY,
    machine,
)
from bench.same_rate import HALF_THE_MACHINE, HopCosts, PipelineCosts

# The targets: ours at most this many times the ceiling's CPU (or latency) at the same rate.
CPU_RATIO = 1.5
P50_RATIO = 2.0
P99_RATIO = 3.0
THROUGHPUT_OVER_NGINX = 1.5
RESIDENT_MIB = 60
IMAGE = "latency.png"


@dataclass(frozen=True)
class Results:
    reads: list[tuple[str, list[Summary]]]  # wrk: gateway, nginx, the service directly
    hops: list[HopCosts]
    orders: PipelineCosts
    changes: PipelineCosts
    curves: dict[str, list[Point]]
    memory: dict[str, dict[str, float]]
    autovacuum: bool
    identity_us: tuple[float, float]  # to sign one, to verify one
    resident_traced: dict[str, float]  # MiB at rest of the traced components
    tracing_off_us: float  # what tracing's helpers cost an order's path while off


def gateway_ratio(hop: HopCosts) -> float:
    return hop.paths["gateway"].ms("gateway") / hop.paths[BARE_PROXY].ms(BARE_PROXY)


def service_ratio(hop: HopCosts) -> float:
    return (hop.paths["gateway"].ms(hop.service)
            / hop.paths[f"{hop.service} directly"].ms(hop.service))


def access_log_ms(hop: HopCosts) -> float:
    return hop.paths["gateway"].ms("gateway") - hop.paths[QUIET_GATEWAY].ms(QUIET_GATEWAY)


def verdicts(results: Results) -> list[tuple[str, str, bool]]:
    """Each target, what this run measured, and whether it is met."""
    rows = []
    for hop in results.hops:
        rows.append((f"{hop.label}: gateway CPU per request <= {CPU_RATIO}x a bare proxy hop's,"
                     f" at {hop.rate:,.0f}/s", f"{gateway_ratio(hop):.2f}x",
                     gateway_ratio(hop) <= CPU_RATIO))
    for label, (ours, peer, _) in results.reads:
        vs_peer = ours.median("rps") / peer.median("rps")
        rows.append((f"{label}: throughput >= {THROUGHPUT_OVER_NGINX}x nginx auth_request,"
                     " p99 no worse",
                     f"{vs_peer:.2f}x, p99 {ours.median('p99_ms'):.1f} vs "
                     f"{peer.median('p99_ms'):.1f} ms",
                     vs_peer >= THROUGHPUT_OVER_NGINX
                     and ours.median("p99_ms") <= peer.median("p99_ms")))
    for hop in results.hops:
        rows.append((f"{hop.label}: {hop.service}'s CPU through the gateway <= {CPU_RATIO}x"
                     f" called directly, at {hop.rate:,.0f}/s", f"{service_ratio(hop):.2f}x",
                     service_ratio(hop) <= CPU_RATIO))
    rows += _pipeline_verdicts(results.orders)
    rows.append(("Orders: 0 oversold", results.orders.verdict,
                 "0 oversold" in results.orders.verdict))
    rows += _pipeline_verdicts(results.changes)
    changes = results.changes
    for field, ratio in (("p50_ms", P50_RATIO), ("p99_ms", P99_RATIO)):
        ours, bare = changes.ours.summary.median(field), changes.bare.summary.median(field)
        rows.append((f"Status change to SSE: {field[:3]} <= {ratio}x the bare pipeline's,"
                     f" at {changes.rate:,.0f}/s", f"{ours:.2f} vs {bare:.2f} ms"
                     f" ({ours / bare:.2f}x)", ours <= ratio * bare))
    rows.append(("Status changes: every one on the stream", changes.verdict,
                 changes.missed == 0))
    rest = results.memory["rest"]
    rows.append((f"Every component <= {RESIDENT_MIB} MiB resident at rest",
                 ", ".join(f"{name} {rest.get(name, 0):.1f}" for name in PORTS),
                 all(0 < rest.get(name, 0) <= RESIDENT_MIB for name in PORTS)))
    return rows


def _pipeline_verdicts(costs: PipelineCosts) -> list[tuple[str, str, bool]]:
    ratio = costs.ours.system_ms() / costs.bare.system_ms()
    return [(f"Whole-system CPU per {costs.operation} <= {CPU_RATIO}x the bare pipeline's,"
             f" at {costs.rate:,.0f}/s",
             f"{costs.ours.system_ms():.2f} vs {costs.bare.system_ms():.2f} ms ({ratio:.2f}x)",
             ratio <= CPU_RATIO)]


def cpu_table(uses: list[CpuUse], operation: str) -> list[str]:
    per_part, busy = cpu_summary(uses)
    return [
        f"| process | ms of CPU per {operation} |", "|---|---|",
        *(f"| {part} | {ms:.3f} |" for part, ms in per_part.items() if ms >= 0.0005),
        f"| **all** | **{sum(per_part.values()):.2f}** |",
        f"| cores busy | {busy:.2f} of {os.cpu_count()} |", "",
    ]


def report(results: Results, runs: int, seconds: int) -> str:
    lines = [
        "# Benchmarks", "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; everything on loopback,",
        "the load generators (wrk, hey, the bench's own open-loop driver) on the same cores as",
        "the system, in a database and RabbitMQ vhost of the bench's own (bench/isolation.py).",
        f"Postgres' autovacuum is {'on' if results.autovacuum else 'off'} here; the bench",
        "vacuums and analyses its database before each scenario.", "",
        f"Command: `make bench` (`BENCH_ARGS='--runs {runs} --seconds {seconds}'`). Each figure",
        "is the median of the runs. Every target is a ratio to something measured in the same",
        "run; the comparisons of CPU are made at one offered rate, the rate that keeps the",
        f"machine {HALF_THE_MACHINE:.0%} busy on our path (from a short calibration run). What",
        "bounds each figure, and which levers paid, is in [performance.md](performance.md).", "",
        "## Against the targets", "",
        "| target | this run | met |", "|---|---|---|",
        *(f"| {target} | {measured} | {'yes' if met else '**no**'} |"
          for target, measured, met in verdicts(results)),
        "", "Where a target is missed, the section of the same number in",
        "[performance.md](performance.md) says what bounds it, from the per-process CPU below",
        "and the profiles it names.", "", *_reads(results), *_hops(results),
        *_pipeline("3. Order placement at one rate", results.orders, [
            "Ours: POST /api/orders through the gateway (the order, its stock, its event in the",
            "outbox, the relay, RabbitMQ, tracking's consumer). The bare pipeline",
            "(bench/bare.py): one HTTP hop, one transaction writing the order and its event, a",
            "confirmed publish, a consume and one update, with the levers the system uses",
            "(confirms in flight together, batched consumption, quorum queues). Each run lasts",
            "until every order of it is tracked, and its CPU is counted until then."]),
        *_pipeline("4. Status change to the SSE stream at one rate", results.changes, [
            "An admin moves orders along, one change per order in flight; the time is from the",
            "change's response to its arrival on the owner's SSE stream (ours: through the",
            "gateway; arriving before the response counts as 0). The probe observes only the",
            "streams. The bare pipeline: one hop, one transaction with the event, a confirmed",
            "publish, a consume writing the notification with NOTIFY, a LISTEN fanning out to",
            "SSE."]),
        "## 5. Latency against offered load", "",
        f"![p50 and p99 against offered load]({IMAGE})", "",
        "Open-loop load (hey, a constant rate) at rising rates, each path up to where it",
        "saturates (answers fall behind the rate, or p99 passes 500 ms). Ceiling: a bare proxy",
        "hop in front of auth.", "",
        "| path | offered req/s: p50 / p99 ms |", "|---|---|",
        *(f"| {name} | " + ", ".join(f"{p.offered:,.0f}: {p.sample.p50_ms:.1f} / "
                                     f"{p.sample.p99_ms:.1f}" for p in points) + " |"
          for name, points in results.curves.items()),
        "", *_memory(results), *_identity(results), "", *_tracing(results),
    ]
    return "\n".join(lines) + "\n"


def _reads(results: Results) -> list[str]:
    lines = [
        "## 1. Authenticated reads at full speed", "",
        "wrk, 2 threads, 50 connections. Ours: the gateway (token cache on, its default). Peer:",
        "Debian's nginx with `auth_request` to auth on every request, proxying to the same",
        "services (bench/nginx.conf). The service itself, called with a valid signed identity,",
        "for scale.", "",
        "| request | through | req/s (spread) | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for label, summaries in results.reads:
        lines += [f"| {label} | {s.name} | {s.median('rps'):,.0f} ({s.spread('rps')}) | "
                  f"{s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | {s.total('non_2xx')} |"
                  for s in summaries]
    return [*lines, ""]


def _hops(results: Results) -> list[str]:
    lines = [
        "## 2. One hop at one rate", "",
        "The same request at the same offered rate (hey) through: the gateway; a second gateway",
        "that writes no access log (what the access log costs); a bare aiohttp proxy hop",
        "(uvloop, no auth, no logging) in front of the service, with a signed identity; the",
        "service called directly. ms of CPU per request of the hop's process and of the",
        "service:", "",
        "| request | path | hop process | service | whole system | p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for hop in results.hops:
        for name, measured in hop.paths.items():
            # The hop's own process, where there is one (not for the service called directly).
            process, service = hop.parts(name)
            s = measured.summary
            lines.append(
                f"| {hop.label} at {hop.rate:,.0f}/s | {name} | "
                f"{measured.ms(process) if process else 0:.3f} | {measured.ms(service):.3f} |"
                f" {measured.system_ms():.3f} | {s.median('p50_ms'):.1f} / "
                f"{s.median('p99_ms'):.1f} |")
    lines += ["", "The access log (one JSON line per request, at the gateway only) costs "
              + ", ".join(f"{access_log_ms(hop) * 1000:.0f} µs per request on {hop.label}"
                          for hop in results.hops) + ".", ""]
    return lines


def _pipeline(title: str, costs: PipelineCosts, text: list[str]) -> list[str]:
    lines = [f"## {title}", "", *text, "",
             f"At {costs.rate:,.0f} per second. {costs.verdict}.", "",
             "| pipeline | per s | p50 ms | p99 ms | whole-system ms of CPU each |",
             "|---|---|---|---|---|"]
    for measured in (costs.ours, costs.bare):
        s = measured.summary
        lines.append(f"| {measured.name} | {s.median('rps'):,.0f} | {s.median('p50_ms'):.2f} |"
                     f" {s.median('p99_ms'):.2f} | {measured.system_ms():.2f} |")
    lines += ["", "Ours, by process:", "", *cpu_table(costs.ours.cpu, costs.operation),
              "The bare pipeline, by process:", "", *cpu_table(costs.bare.cpu, costs.operation)]
    return lines


def _memory(results: Results) -> list[str]:
    memory = results.memory
    return [
        "## 6. Resident memory (MiB)", "",
        "VmRSS of each process. Of that at rest, the pages of files: the interpreter, the",
        "extension modules and the shared libraries they load, which every component maps",
        "from the same files.", "",
        "| component | at rest | of which pages of files | after the load |",
        "|---|---|---|---|",
        *(f"| {name} | {memory['rest'].get(name, 0):.0f} | "
          f"{memory['rest_in_files'].get(name, 0):.0f} | {memory['loaded'].get(name, 0):.0f} |"
          for name in PORTS),
        "",
    ]


def tracing_costs(hop: HopCosts) -> tuple[tuple[float, float], tuple[float, float]]:
    """ms of CPU per request, tracing off and on: the gateway's, and the service's behind it."""
    off, on = hop.paths["gateway"], hop.paths[TRACED_GATEWAY]
    return ((off.ms("gateway"), on.ms(TRACED_GATEWAY)),
            (off.ms(hop.service), on.ms(TRACED[hop.service])))


def _added(off: float, on: float) -> str:
    return f"{(on - off) * 1000:+.0f} µs ({(on / off - 1) * 100:+.0f} %)" if off else "n/a"


def _tracing(results: Results) -> list[str]:
    lines = [
        "## 8. Tracing", "",
        "The requests of section 2 at the same rates, through a gateway, auth and orders of",
        "their own with tracing on at the default sampling (every request is recorded),",
        "exporting over OTLP/HTTP to a sink the bench runs (bench/otlp_sink.py), against the",
        "system's own with tracing off. ms of CPU per request:", "",
        "| request | gateway off | gateway on | added | service off | service on | added |"
        " spans exported per request | the sink's own |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for hop in results.hops:
        (gateway_off, gateway_on), (service_off, service_on) = tracing_costs(hop)
        lines.append(
            f"| {hop.label} at {hop.rate:,.0f}/s | {gateway_off:.3f} | {gateway_on:.3f} |"
            f" {_added(gateway_off, gateway_on)} | {service_off:.3f} | {service_on:.3f} |"
            f" {_added(service_off, service_on)} | {hop.spans_per_request:.1f} |"
            f" {hop.paths[TRACED_GATEWAY].ms(OTLP_SINK):.3f} |")
    rest = results.memory["rest"]
    lines += [
        "", "Resident at rest (MiB), tracing off (the system's) and on (the traced ones):", "",
        "| component | off | on |", "|---|---|---|",
        *(f"| {name} | {rest.get(name, 0):.1f} | {results.resident_traced.get(traced, 0):.1f} |"
          for name, traced in TRACED.items()),
        "", "Off, a component loads nothing of OpenTelemetry and adds no middleware; the",
        "helpers an order's path calls (the gateway's, orders', the relay's, tracking's",
        f"consumer's) cost {results.tracing_off_us:.2f} µs of CPU in all, measured alone.",
    ]
    return lines


def _identity(results: Results) -> list[str]:
    sign_us, verify_us = results.identity_us
    return [
        "## 7. The gateway's vouching", "",
        "Each proxied request carries an identity the gateway signs with the key it shares with",
        "that one service (HMAC-SHA256), and the service verifies (shopkit/identity.py). Its",
        "CPU, measured alone in this run (an order's request, with its body):", "",
        "| sign (gateway) | verify (service) |", "|---|---|",
        f"| {sign_us:.1f} µs | {verify_us:.1f} µs |",
    ]

