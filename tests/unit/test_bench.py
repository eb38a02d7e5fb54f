"""The bench's reading of wrk and its verdicts on the targets: what docs/benchmarks.md says is
only as right as these."""

import os

import pytest

from bench.cpu import LOAD, CpuReading, CpuUse, cpu_reading, cpu_use, machine_cpu, process_cpu
from bench.load import Latencies, Sample, Summary, parse_wrk
from bench.processes import PORTS
from bench.report import Results, report, verdicts
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


def _results(
    peer_ratio: float, ceiling_ratio: float, orders_per_second: float, placement_p99: float,
    propagation_p50: float, propagation_p99: float, largest_mib: float, peer_p99: float = 20.0,
) -> Results:
    def reads(rps: float, p99: float) -> Summary:
        return Summary("x", [Sample(rps, 1.0, p99, 0)])

    ours = 3000.0
    read = ("GET /api/users/me", [reads(ours, 20.0), reads(ours / peer_ratio, peer_p99),
                                  reads(ours / ceiling_ratio, 10.0)])
    memory = {name: 50.0 for name in PORTS} | {"auth": largest_mib}
    return Results(
        reads=[read],
        placement=Summary("gateway", [Sample(orders_per_second, 30.0, placement_p99, 0)]),
        oversold="stock taken 10, units ordered 10: 0 oversold",
        propagation={"in tracking": Summary(
            "visible in tracking", [Latencies(100, propagation_p50, propagation_p99)])},
        missed=0,
        rate=200,
        memory={"rest": memory, "rest_in_files": memory, "loaded": memory},
        autovacuum=False,
        placement_cpu=[CpuUse({"orders": 0.7, "Postgres": 0.8}, 1.9)],
        propagation_cpu=[CpuUse({"orders": 1.5, "gateway": 0.5}, 1.2),
                         CpuUse({"orders": 1.7, "gateway": 0.5}, 1.4)],
        identity_us=(4.0, 5.0),
    )


def test_a_run_exactly_at_every_bound_meets_every_target() -> None:
    rows = verdicts(_results(1.5, 0.6, 1000.0, 50.0, 5.0, 25.0, 60.0))
    assert [met for _, _, met in rows] == [True] * len(rows)


def test_a_run_just_past_every_bound_meets_none_of_those_targets() -> None:
    rows = verdicts(_results(1.49, 0.59, 999.0, 50.1, 5.1, 25.1, 60.1))
    missed = [target for target, _, met in rows if not met]
    assert missed == [
        "GET /api/users/me: >= 1.5x nginx auth_request, p99 no worse",
        "GET /api/users/me: >= 0.6x the ceiling",
        "Order placement: >= 1,000 orders/s",
        "Order placement: p99 <= 50 ms",
        "Status change visible in tracking, at 200/s: p50 <= 5 ms, p99 <= 25 ms",
        "Every component <= 60 MiB resident at rest",
    ]


def test_more_throughput_than_nginx_with_a_worse_p99_misses() -> None:
    target, measured, met = verdicts(_results(2.0, 0.9, 1100.0, 40.0, 3.0, 8.0, 55.0,
                                              peer_p99=19.9))[0]
    assert "nginx" in target and not met, measured


def test_a_memory_miss_shows_in_the_figure_reported_beside_it() -> None:
    row = verdicts(_results(2.0, 0.9, 1100.0, 40.0, 3.0, 8.0, 60.3))[-1]
    assert row[2] is False and "auth 60.3" in row[1]


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


def test_the_report_gives_each_scenario_the_median_cpu_of_its_runs_per_operation() -> None:
    text = report(_results(2.0, 0.9, 1100.0, 40.0, 3.0, 8.0, 55.0), runs=1, seconds=5)
    placement = text[text.index("CPU per order"):text.index("## 3.")]
    propagation = text[text.index("CPU per change"):text.index("## 4.")]
    assert "| orders | 0.70 |" in placement and "| Postgres | 0.80 |" in placement
    assert "| **all** | **1.50** |" in placement and "1.90 of" in placement
    assert "units of the gateway's" not in placement  # the gateway's share was not measured
    assert "| orders | 1.60 |" in propagation and "1.30 of" in propagation
    assert "| all, in units of the gateway's (what compares across machines) | 4.2 |" in propagation


def test_the_report_gives_the_identitys_cost_beside_an_orders() -> None:
    text = report(_results(2.0, 0.9, 1100.0, 40.0, 3.0, 8.0, 55.0), runs=1, seconds=5)
    section = text[text.index("## 5."):]
    # 4 + 5 us of the 1.5 ms an order costs every process.
    assert "| 4.0 µs | 5.0 µs | 0.60% |" in section


def test_the_identitys_cost_is_measured() -> None:
    sign_us, verify_us = identity_cost(repeats=200)
    assert 0 < sign_us < 10_000 and 0 < verify_us < 10_000
