"""`make bench`: the system started as `make run` starts it, driven by wrk from another process.

Every number is measured in the same run as what it is compared with: our gateway, nginx
`auth_request` in front of the same services (the peer), and the service called directly with
a valid identity (the ceiling). Each measurement is repeated; the median and the spread (min to
max) are printed, and written to docs/benchmarks.md.
"""

import argparse
import asyncio
import os
import shutil
from pathlib import Path

from bench.isolation import bench_environment, fresh_bench_shop
from bench.processes import ROOT, resident_memory, running_nginx, running_system
from bench.report import Results, report, verdicts
from bench.scenarios import authenticated_reads, event_propagation, identity_cost, order_placement
from bench.shop import prepare, vacuumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--rate", type=int, default=200,
                        help="status changes per second in scenario 3")
    parser.add_argument("--only", type=int, choices=(1, 2, 3), default=None,
                        help="run one scenario and print it, without writing the report")
    args = parser.parse_args()
    log_dir = ROOT / ".bench"  # the processes' output, kept for a look after a failure
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir()
    os.environ.update(bench_environment(os.environ))
    asyncio.run(fresh_bench_shop())
    with running_system(log_dir), running_nginx(log_dir):
        customers, products = asyncio.run(prepare(customers=20, products=50, stock=100_000))
        rest, rest_in_files = resident_memory(), resident_memory("RssFile")
        autovacuum = asyncio.run(vacuumed())
        if args.only == 1:
            authenticated_reads(customers[0], args.runs, args.seconds)
            return
        if args.only == 2:
            order_placement(customers, products, args.runs, args.seconds)
            return
        if args.only == 3:
            asyncio.run(event_propagation(customers, products, args.rate, args.runs,
                                          args.seconds))
            return
        reads = authenticated_reads(customers[0], args.runs, args.seconds)
        asyncio.run(vacuumed())
        placement, oversold, placement_cpu = order_placement(customers, products, args.runs,
                                                             args.seconds)
        asyncio.run(vacuumed())
        changes, missed, propagation_cpu = asyncio.run(event_propagation(
            customers, products, args.rate, args.runs, args.seconds))
        loaded = resident_memory()
    results = Results(reads, placement, oversold, changes, missed, args.rate,
                      {"rest": rest, "rest_in_files": rest_in_files, "loaded": loaded},
                      autovacuum, placement_cpu, propagation_cpu, identity_cost())
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(report(results, args.runs, args.seconds))
    print("against the targets:")
    for target, measured, met in verdicts(results):
        print(f"  {'met' if met else 'MISSED':<6}  {target}: {measured}")
    print(f"written to {args.output}")


main()
