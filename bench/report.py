"""docs/benchmarks.md, written from one run's results, with the targets judged."""

import datetime
import os
from dataclasses import dataclass

from bench.cpu import CpuUse, cpu_summary
from bench.load import Summary
from bench.processes import PORTS, machine
from bench.scenarios import POLL_SECONDS


@dataclass(frozen=True)
class Results:
    reads: list[tuple[str, list[Summary]]]
    placement: Summary
    oversold: str
    propagation: dict[str, Summary]
    missed: int
    rate: int
    memory: dict[str, dict[str, float]]
    autovacuum: bool
    placement_cpu: list[CpuUse]
    propagation_cpu: list[CpuUse]
    identity_us: tuple[float, float]  # to sign one, to verify one


def verdicts(results: Results) -> list[tuple[str, str, bool]]:
    """Each target of the issue, what this run measured, and whether it is met."""
    rows = []
    for label, (ours, peer, ceiling) in results.reads:
        vs_peer = ours.median("rps") / peer.median("rps")
        vs_ceiling = ours.median("rps") / ceiling.median("rps")
        rows += [
            (f"{label}: >= 1.5x nginx auth_request, p99 no worse",
             f"{vs_peer:.2f}x, p99 {ours.median('p99_ms'):.1f} vs {peer.median('p99_ms'):.1f} ms",
             vs_peer >= 1.5 and ours.median("p99_ms") <= peer.median("p99_ms")),
            (f"{label}: >= 0.6x the ceiling", f"{vs_ceiling:.2f}x", vs_ceiling >= 0.6),
        ]
    placed = results.placement
    rows += [
        ("Order placement: >= 1,000 orders/s", f"{placed.median('rps'):,.0f}/s",
         placed.median("rps") >= 1000),
        ("Order placement: p99 <= 50 ms", f"{placed.median('p99_ms'):.1f} ms",
         placed.median("p99_ms") <= 50),
        ("Order placement: 0 oversold", results.oversold, "0 oversold" in results.oversold),
    ]
    for summary in results.propagation.values():
        rows.append((
            f"Status change {summary.name}, at {results.rate}/s: p50 <= 5 ms, p99 <= 25 ms",
            f"p50 {summary.median('p50_ms'):.2f} ms, p99 {summary.median('p99_ms'):.2f} ms",
            summary.median("p50_ms") <= 5 and summary.median("p99_ms") <= 25,
        ))
    rows.append(("Status changes seen everywhere within 5 s", f"{results.missed} missed",
                 results.missed == 0))
    rest = results.memory["rest"]
    rows.append(("Every component <= 60 MiB resident at rest",
                 ", ".join(f"{name} {rest.get(name, 0):.1f}" for name in PORTS),
                 all(0 < rest.get(name, 0) <= 60 for name in PORTS)))
    return rows


def cpu_table(uses: list[CpuUse], operation: str) -> list[str]:
    """What bounds a throughput on a machine of a few cores: the CPU that each operation costs
    all the processes it goes through."""
    per_part, busy = cpu_summary(uses)
    return [
        f"CPU per {operation} during the runs, from /proc (user and system time of each",
        "process; other: the rest of the machine's busy time, mostly the kernel's loopback",
        f"network). The cores were {busy:.2f} of {os.cpu_count()} busy.", "",
        f"| process | ms of CPU per {operation} |", "|---|---|",
        *(f"| {part} | {ms:.2f} |" for part, ms in per_part.items() if ms >= 0.005),
        f"| **all** | **{sum(per_part.values()):.2f}** |",
        f"| all, in units of the gateway's (what compares across machines) | "
        f"{sum(per_part.values()) / per_part['gateway']:.1f} |" if per_part["gateway"] else "",
        "",
    ]


def report(results: Results, runs: int, seconds: int) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; everything on loopback,",
        "the load generator (wrk, 2 threads) on the same cores as the system.",
        f"Postgres' autovacuum is {'on' if results.autovacuum else 'off'} here; the bench",
        "vacuums and analyses the database before each scenario, so none starts on the dead",
        "rows of the one before.",
        "",
        f"Command: `make bench` (`BENCH_ARGS='--runs {runs} --seconds {seconds}'`). Each figure is",
        "the median of the runs; the spread is the lowest and highest run. This file is written",
        "by the bench; what bounds each figure, and which levers paid, is in",
        "[performance.md](performance.md).",
        "",
        "## Against the targets",
        "",
        "| target | this run | met |",
        "|---|---|---|",
        *(f"| {target} | {measured} | {'yes' if met else '**no**'} |"
          for target, measured, met in verdicts(results)),
        "",
        "## 1. Authenticated reads",
        "",
        "Ours: the gateway (token cache on, its default). Peer: Debian's nginx with",
        "`auth_request` to the auth service on every request, proxying to the same services",
        "(bench/nginx.conf). Ceiling: the service itself, called with a valid signed identity.",
        "",
        "| request | through | req/s (spread) | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for label, (ours, peer, ceiling) in results.reads:
        for summary in (ours, peer, ceiling):
            lines.append(f"| {label} | {summary.name} | {summary.median('rps'):,.0f} "
                         f"({summary.spread('rps')}) | {summary.median('p50_ms'):.2f} | "
                         f"{summary.median('p99_ms'):.2f} |")
    lines += ["", "| request | ours / nginx (req/s) | ours / ceiling (req/s) | "
              "p99 ours vs nginx |", "|---|---|---|---|"]
    for label, (ours, peer, ceiling) in results.reads:
        lines.append(f"| {label} | {ours.median('rps') / peer.median('rps'):.2f}x | "
                     f"{ours.median('rps') / ceiling.median('rps'):.2f}x | "
                     f"{ours.median('p99_ms'):.2f} vs {peer.median('p99_ms'):.2f} ms |")
    placed = results.placement
    lines += [
        "", "## 2. Order placement", "",
        "POST /api/orders through the gateway, 32 connections, each order one unit of one of",
        "the bench products for one of the bench customers (bench/place_order.lua).", "",
        "| orders/s (spread) | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|",
        f"| {placed.median('rps'):,.0f} ({placed.spread('rps')}) | "
        f"{placed.median('p50_ms'):.2f} | {placed.median('p99_ms'):.2f} | "
        f"{placed.total('non_2xx')} |",
        "", f"Afterwards: {results.oversold}.", "",
        *cpu_table(results.placement_cpu, "order"),
        "## 3. Event propagation", "",
        f"An admin moves orders along their statuses at {results.rate} changes/s through the",
        "gateway (one change per order in flight). For each change: the time from its response",
        "to the new status being in tracking's table, to the owner's notification being in the",
        f"notifications table (both read every {POLL_SECONDS * 1000:.0f} ms), and to the",
        "notification arriving on the owner's SSE stream through the gateway. Something seen",
        "before the response arrived counts as 0.", "",
        "| visible in | p50 ms | p99 ms (spread) | changes |", "|---|---|---|---|",
        *(f"| {where} | {s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} "
          f"({s.spread('p99_ms')}) | {s.total('changes'):,} |"
          for where, s in results.propagation.items()),
        "", f"Changes not seen everywhere within 5 s: {results.missed}.", "",
        *cpu_table(results.propagation_cpu, "change"),
        "## 4. Resident memory (MiB)", "",
        "VmRSS of each process. Of that at rest, the pages of files: the interpreter, the",
        "extension modules and the shared libraries they load, which every component maps",
        "from the same files.", "",
        "| component | at rest | of which pages of files | after the load |",
        "|---|---|---|---|",
    ]
    memory = results.memory
    for name in PORTS:
        lines.append(f"| {name} | {memory['rest'].get(name, 0):.0f} | "
                     f"{memory['rest_in_files'].get(name, 0):.0f} | "
                     f"{memory['loaded'].get(name, 0):.0f} |")
    return "\n".join([*lines, *identity_section(results)]) + "\n"


def identity_section(results: Results) -> list[str]:
    sign_us, verify_us = results.identity_us
    per_order_ms = sum(cpu_summary(results.placement_cpu)[0].values())
    share = (sign_us + verify_us) / 1000 / per_order_ms if per_order_ms else 0
    return [
        "", "## 5. The gateway's vouching", "",
        "Each proxied request carries an identity the gateway signs with the key it shares with",
        "that one service (HMAC-SHA256), and the service verifies (shopkit/identity.py). Its",
        "CPU, measured alone in this run (an order's request, with its body):", "",
        "| sign (gateway) | verify (service) | together, of the CPU an order costs (scenario 2) |",
        "|---|---|---|",
        f"| {sign_us:.1f} µs | {verify_us:.1f} µs | {share:.2%} |",
    ]
