"""The bench's reading of its load generators and its verdicts on the targets: what
docs/benchmarks.md says is only as right as these."""

import asyncio
import itertools
import os
import statistics
import time
from pathlib import Path

import pytest

from bench.cpu import LOAD, CpuReading, CpuUse, cpu_reading, cpu_use, machine_cpu, process_cpu
from bench.curve import Point, draw, saturated
from bench.load import Sample, Summary, open_loop, parse_hey, parse_wrk
from bench.processes import (
    BARE_PIPELINE,
    BARE_PROXY,
    OTLP_SINK,
    PORTS,
    QUIET_GATEWAY,
    TRACED,
    TRACED_GATEWAY,
)
from bench.report import Results, report, tracing_costs, verdicts
from bench.same_rate import HopCosts, Measured, PipelineCosts, rate_for_half_the_machine
from bench.scenarios import identity_cost

# wrk 4.1 with --latency, as it prints a run.
WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:18999/api/orders
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.55ms  563.93us   7.55ms   80.21%
    Req/Sec     1.29k   281.92     2.51k    95.24%
  Latency Distribution
     50%  {p50}
     75%    1.78ms
     90%    2.08ms
     99%  {p99}
  2688 requests in 1.10s, 1.33MB read
{non_2xx}Requests/sec:   2443.32
Transfer/sec:      1.21MB
"""


def test_wrk_figures_are_read_in_milliseconds_whatever_unit_wrk_chose() -> None:
    sample = parse_wrk(WRK_REPORT.format(
        p50="812.00us", p99="1.20s", non_2xx="  Non-2xx or 3xx responses: 7\n"))
    assert sample == Sample(rps=2443.32, p50_ms=0.812, p99_ms=1200.0, non_2xx=7)


def test_a_run_with_only_successes_counts_no_failures() -> None:
    sample = parse_wrk(WRK_REPORT.format(p50="1.52ms", p99="3.16ms", non_2xx=""))
    assert sample == Sample(rps=2443.32, p50_ms=1.52, p99_ms=3.16, non_2xx=0)


HEY_REPORT = """
Summary:
  Total:\t2.0127 secs
  Requests/sec:\t698.7397

Latency distribution:
  10% in 0.0021 secs
  50% in 0.0033 secs
  99% in 0.0113 secs

Status code distribution:
  [200]\t1390 responses
  [503]\t3 responses
{errors}"""


def test_hey_figures_are_read_in_milliseconds_with_every_failure_counted() -> None:
    errors = ("\nError distribution:\n  [4]\tGet \"http://127.0.0.1:1/\": dial tcp: refused\n"
              "  [2]\tGet \"http://127.0.0.1:1/\": context deadline exceeded\n")
    assert parse_hey(HEY_REPORT.format(errors=errors)) == Sample(
        rps=698.7397, p50_ms=pytest.approx(3.3), p99_ms=pytest.approx(11.3), non_2xx=3 + 6)
    assert parse_hey(HEY_REPORT.format(errors="")).non_2xx == 3


async def test_the_open_loop_keeps_its_rate_while_answers_are_slower_than_it() -> None:
    started: list[float] = []

    async def slow(n: int) -> bool:
        started.append(time.perf_counter())
        await asyncio.sleep(0.2)  # the answer; ten requests are in flight at once
        return n % 10 != 0

    sample = await open_loop(50, 1.0, slow)
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert len(started) == 50 and statistics.median(gaps) == pytest.approx(0.02, abs=0.005)
    assert sample.non_2xx == 5 and sample.p50_ms >= 200


def test_the_rate_keeps_the_machine_half_busy() -> None:
    # 4 ms of CPU an operation on n cores: n * 1000 / 4 would fill them.
    assert rate_for_half_the_machine(4.0) == pytest.approx((os.cpu_count() or 1) * 125)


def test_a_curve_stops_where_answers_fall_behind_or_the_p99_passes_the_bound() -> None:
    assert not saturated(Point(1000, Sample(995, 2.0, 30.0, 0)))
    assert saturated(Point(1000, Sample(850, 2.0, 30.0, 0)))
    assert saturated(Point(1000, Sample(1000, 2.0, 600.0, 0)))
    assert saturated(Point(1000, Sample(1000, 2.0, 30.0, 100)))


def test_the_chart_is_drawn_as_a_png(tmp_path: Path) -> None:
    curve = [Point(r, Sample(r, 1.0 + r / 1000, 3.0 + r / 500, 0)) for r in (200, 300, 450)]
    draw({"gateway": curve, "nginx auth_request": curve}, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _measured(name: str, parts: dict[str, float], p50: float = 1.0, p99: float = 2.0
              ) -> Measured:
    return Measured(name, [Sample(100, p50, p99, 0)], [CpuUse(parts, 1.0)])


def _results(ratio: float, largest_mib: float = 50.0, peer_p99: float = 20.0) -> Results:
    """A run where every ratio to a ceiling is `ratio` (throughput over nginx: 1.5 / ratio * 1.5,
    so that it sits exactly at its bound when the others do)."""
    def reads(rps: float, p99: float) -> Summary:
        return Summary("x", [Sample(rps, 1.0, p99, 0)])

    read = ("GET /api/users/me", [reads(3000.0, 20.0), reads(3000.0 * ratio / 2.25, peer_p99),
                                  reads(4000.0, 10.0)])
    hop = HopCosts("GET /api/users/me", "auth", 700.0, {
        "gateway": _measured("gateway", {"gateway": 0.5 * ratio, "auth": 0.25 * ratio}),
        QUIET_GATEWAY: _measured(QUIET_GATEWAY, {QUIET_GATEWAY: 0.48, "auth": 0.25}),
        TRACED_GATEWAY: _measured(TRACED_GATEWAY, {TRACED_GATEWAY: 0.6, TRACED["auth"]: 0.3,
                                                   OTLP_SINK: 0.05}),
        BARE_PROXY: _measured(BARE_PROXY, {BARE_PROXY: 0.5, "auth": 0.25}),
        "auth directly": _measured("auth directly", {"auth": 0.25}),
    }, spans_per_request=4.0)
    orders = PipelineCosts("order", 300.0,
                           _measured("ours", {"orders": 2.0 * ratio, LOAD: 9.0}),
                           _measured("bare", {BARE_PIPELINE: 2.0}),
                           "stock taken 10, units ordered 10: 0 oversold")
    changes = PipelineCosts("change", 150.0,
                            _measured("ours", {"orders": 3.0 * ratio}, 2.0 * ratio, 9.0 * ratio),
                            _measured("bare", {BARE_PIPELINE: 3.0}, 1.5, 4.5),
                            "changes not on the stream within 5 s: ours 0, bare 0")
    memory = {name: 50.0 for name in PORTS} | {"auth": largest_mib}
    return Results(reads=[read], hops=[hop], orders=orders, changes=changes,
                   curves={"gateway": [Point(200, Sample(200, 1.0, 2.0, 0))]},
                   memory={"rest": memory, "rest_in_files": memory, "loaded": memory},
                   autovacuum=False, identity_us=(4.0, 5.0),
                   resident_traced={name: 60.0 for name in TRACED.values()}, tracing_off_us=1.5)


def test_a_run_exactly_at_every_bound_meets_every_target() -> None:
    rows = verdicts(_results(1.5, largest_mib=60.0))
    assert [target for target, _, met in rows if not met] == []


def test_a_run_just_past_every_bound_meets_none_of_those_targets() -> None:
    rows = verdicts(_results(1.51, largest_mib=60.1))
    # Only the two that are no ratio are still met.
    assert [target for target, _, met in rows if met] == [
        "Orders: 0 oversold",
        "Status changes: every one on the stream",
    ]


def test_more_throughput_than_nginx_with_a_worse_p99_misses() -> None:
    row = next(r for r in verdicts(_results(1.0, peer_p99=19.9)) if "nginx" in r[0])
    assert row[2] is False, row


def test_the_load_generator_s_cpu_is_not_the_system_s() -> None:
    row = next(r for r in verdicts(_results(1.0)) if "CPU per order" in r[0])
    assert row[1] == "2.00 vs 2.00 ms (1.00x)" and row[2]


def test_a_memory_miss_shows_in_the_figure_reported_beside_it() -> None:
    row = verdicts(_results(1.0, largest_mib=60.3))[-1]
    assert row[2] is False and "auth 60.3" in row[1]


def test_the_report_gives_the_access_log_s_cost_and_each_pipeline_by_process() -> None:
    text = report(_results(1.0), runs=1, seconds=5)
    assert "costs 20 µs per request on GET /api/users/me" in text
    orders = text[text.index("## 3."):text.index("## 4.")]
    assert "| orders | 2.000 |" in orders and f"| {BARE_PIPELINE} | 2.000 |" in orders
    assert "![p50 and p99 against offered load](latency.png)" in text


def test_tracing_s_cost_is_each_traced_process_against_its_untraced_twin() -> None:
    results = _results(1.0)
    (gateway_off, gateway_on), (service_off, service_on) = tracing_costs(results.hops[0])
    assert (gateway_off, gateway_on) == (0.5, 0.6) and (service_off, service_on) == (0.25, 0.3)
    text = report(results, runs=1, seconds=5)
    tracing = text[text.index("## 8."):]
    assert ("| GET /api/users/me at 700/s | 0.500 | 0.600 | +100 µs (+20 %) | 0.250 | 0.300 |"
            " +50 µs (+20 %) | 4.0 | 0.050 |") in tracing
    assert "| auth | 50.0 | 60.0 |" in tracing and "1.50 µs" in tracing
    # Section 2 shows the traced path with its own service's CPU.
    hops = text[text.index("## 2."):text.index("## 3.")]
    assert f"| {TRACED_GATEWAY} | 0.600 | 0.300 |" in hops


# /proc/<pid>/stat of a process whose name holds ") " (the last parenthesis ends the name):
# utime 250, stime 50, cutime 700, cstime 300 ticks.
PROCESS_STAT = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 0 0 0 0 250 50 700 300 20 0 1 0"


def test_a_process_cpu_is_its_user_and_system_time_and_its_children_only_when_asked() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    assert process_cpu(PROCESS_STAT) == 300 / ticks
    assert process_cpu(PROCESS_STAT, children=True) == 1300 / ticks


def test_the_machine_is_busy_for_all_but_idle_and_io_wait_and_steal_counts_for_neither() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    busy, total = machine_cpu("cpu  100 10 40 800 20 5 25 999 0 0\ncpu0 1 2 3\n")
    assert (busy, total) == (180 / ticks, 1000 / ticks)


def test_cpu_per_operation_splits_the_machine_busy_time_among_the_parts_and_other() -> None:
    before = CpuReading({"orders": 1.0, "Postgres": 2.0}, busy=10.0, total=100.0)
    after = CpuReading({"orders": 1.5, "Postgres": 2.8, "gateway": 0.2}, busy=12.0, total=102.0)
    use = cpu_use(before, after, operations=1000)
    # ms per operation: orders 0.5 s / 1000, Postgres 0.8 s, the new process all its 0.2 s,
    # and the 0.5 s of busy time no part accounts for.
    assert use.ms_per_operation == pytest.approx(
        {"orders": 0.5, "Postgres": 0.8, "gateway": 0.2, "other": 0.5})
    assert use.cores_busy == os.cpu_count()  # 2 s busy of 2 s: every core all the time


def test_a_reading_finds_the_bench_itself_as_the_load_with_the_cpu_it_has_used() -> None:
    sum(i * i for i in range(300_000))  # some CPU of its own to find
    reading = cpu_reading()
    assert reading.by_part[LOAD] > 0
    assert 0 < reading.busy < reading.total


def test_the_identitys_cost_is_measured() -> None:
    sign_us, verify_us = identity_cost(repeats=200)
    assert 0 < sign_us < 10_000 and 0 < verify_us < 10_000
