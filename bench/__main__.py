"""`make bench`: the system started as `make run` starts it, in a database and vhost of its own,
driven by load generators in other processes.

Every number is judged against something measured in the same run: nginx `auth_request` in
front of the same services (the peer), the service called directly, and bare ceilings built
from the same libraries (bench/bare.py), compared at the same offered rate. Each measurement
is repeated; the medians are printed, and written to docs/benchmarks.md with a chart of
latency against offered load (docs/latency.png).
"""

import argparse
import asyncio
import os
import shutil
from pathlib import Path

from bench.curve import draw, latency_curves
from bench.isolation import bench_database_dsn, bench_environment, fresh_bench_shop
from bench.processes import (
    ROOT,
    resident_memory,
    running_bare,
    running_nginx,
    running_system,
)
from bench.report import IMAGE, Results, report, verdicts
from bench.same_rate import hop_costs, orders_against_bare, status_changes_against_bare
from bench.scenarios import authenticated_reads, identity_cost, tracing_off_cost
from bench.shop import prepare, vacuumed

SCENARIOS = {1: "reads at full speed", 2: "one hop at one rate", 3: "orders at one rate",
             4: "status changes at one rate", 5: "latency curves"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--only", type=int, choices=tuple(SCENARIOS), default=None,
                        help="run one scenario and print it, without writing the report: "
                        + ", ".join(f"{n} {name}" for n, name in SCENARIOS.items()))
    args = parser.parse_args()
    log_dir = ROOT / ".bench"  # the processes' output, kept for a look after a failure
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir()
    os.environ.update(bench_environment(os.environ))
    asyncio.run(fresh_bench_shop())
    with running_system(log_dir), running_nginx(log_dir), \
            running_bare(log_dir, bench_database_dsn(), os.environ["RABBITMQ_URL"]):
        customers, products = asyncio.run(prepare(customers=20, products=50, stock=1_000_000))
        rest, rest_in_files = resident_memory(), resident_memory("RssFile")
        autovacuum = asyncio.run(vacuumed())
        runs, seconds = args.runs, args.seconds
        scenarios = {
            1: lambda: authenticated_reads(customers[0], runs, seconds),
            2: lambda: hop_costs(customers[0], runs, seconds, log_dir),
            3: lambda: asyncio.run(orders_against_bare(customers, products, runs, seconds)),
            4: lambda: asyncio.run(status_changes_against_bare(customers, products, runs,
                                                               seconds)),
            5: lambda: latency_curves(customers[0]),
        }
        if args.only is not None:
            scenarios[args.only]()
            return
        measured = {}
        for number, scenario in scenarios.items():
            asyncio.run(vacuumed())
            measured[number] = scenario()
        loaded = resident_memory()
    draw(measured[5], args.output.parent / IMAGE)
    results = Results(measured[1], measured[2].costs, measured[3], measured[4], measured[5],
                      {"rest": rest, "rest_in_files": rest_in_files, "loaded": loaded},
                      autovacuum, identity_cost(), measured[2].resident_traced,
                      tracing_off_cost())
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(report(results, args.runs, args.seconds))
    print("against the targets:")
    for target, figure, met in verdicts(results):
        print(f"  {'met' if met else 'MISSED':<6}  {target}: {figure}")
    print(f"written to {args.output} and {args.output.parent / IMAGE}")


main()
