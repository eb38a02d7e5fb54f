"""Load, and the runs' figures: each target warmed up, then run several times, the median and
the spread of the runs kept.

Two kinds of load. wrk keeps a number of connections busy (closed loop): what it measures is
the most a path serves. hey and `open_loop` offer a constant rate whatever the answers take
(open loop, until the path saturates): what they measure is what a request costs at that
rate, and CPU per request depends on the rate, so two paths are compared only at the same one.
"""

import asyncio
import math
import os
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuUse, cpu_reading, cpu_use
from bench.processes import tool

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


@dataclass(frozen=True)
class Summary:
    name: str
    samples: list[Sample]

    def median(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)

    def spread(self, field: str) -> str:
        values = [getattr(s, field) for s in self.samples]
        return f"{min(values):,.0f}-{max(values):,.0f}" if field == "rps" else (
            f"{min(values):.2f}-{max(values):.2f}")

    def total(self, field: str) -> int:
        return sum(getattr(s, field) for s in self.samples)


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int,
        script: Path | None = None, env: dict[str, str] | None = None) -> Sample:
    command = [tool("wrk"), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
               *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}"))]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> Sample:
    """The figures of wrk's report (run with --latency)."""
    return Sample(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_latency(output, "50%"),
        p99_ms=_latency(output, "99%"),
        non_2xx=int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output))
        else 0,
    )


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match, output
    return float(match.group(1)) * UNITS[match.group(2)]


# hey's workers each send at most WORKER_RATE requests a second, and wait for an answer before
# the next: a worker that starts with the others ticks with them, so requests leave in bursts
# of one per worker. Workers at a high rate each keep the bursts small (rate / WORKER_RATE,
# every 1 / WORKER_RATE s); a path whose answers take longer than that falls behind the
# offered rate, which is where it saturates (bench/curve.py).
WORKER_RATE = 100


def hey(url: str, headers: dict[str, str], rate: float, seconds: int) -> Sample:
    """`rate` requests per second for `seconds`."""
    workers = max(1, math.ceil(rate / WORKER_RATE))
    command = [tool("hey"), "-z", f"{seconds}s", "-c", str(workers),
               "-q", f"{rate / workers:.3f}",
               *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}"))]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_hey(output)


def parse_hey(output: str) -> Sample:
    """The figures of hey's report; requests that got no answer count as failures."""
    answers, _, errors = output.partition("Error distribution:")
    statuses = re.findall(r"^\s+\[(\d+)\]\s+(\d+) responses", answers, re.MULTILINE)
    return Sample(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_hey_latency(output, "50%"),
        p99_ms=_hey_latency(output, "99%"),
        non_2xx=sum(int(n) for code, n in statuses if not 200 <= int(code) < 300)
        + sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors, re.MULTILINE)),
    )


def _hey_latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile} in ([\d.]+) secs", output, re.MULTILINE)
    return float(match.group(1)) * 1000 if match else math.nan


async def open_loop(rate: float, seconds: float,
                    send: Callable[[int], Awaitable[bool]]) -> Sample:
    """Calls `send(n)` for the n-th request at `rate` per second for `seconds`, each on time
    whether or not the ones before it were answered; `send` says whether it succeeded."""
    latencies: list[float] = []
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        if await send(n):
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures += 1

    start = time.perf_counter()
    requests = []
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        requests.append(asyncio.create_task(one(n)))
    await asyncio.gather(*requests)
    return sample_of(latencies, len(latencies) / (time.perf_counter() - start), failures)


def sample_of(latencies_ms: list[float], rps: float, failures: int) -> Sample:
    """A run's figures from the latency of each of its answers (NaN with fewer than two)."""
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive") \
        if len(latencies_ms) > 1 else [math.nan] * 99
    return Sample(rps=rps, p50_ms=cuts[49], p99_ms=cuts[98], non_2xx=failures)


def metered(measure: Callable[[int], Sample], uses: list[CpuUse]) -> Callable[[int], Sample]:
    """`measure`, with the CPU of each run per request added to `uses`."""
    def run(seconds: int) -> Sample:
        before = cpu_reading()
        sample = measure(seconds)
        uses.append(cpu_use(before, cpu_reading(), sample.rps * seconds))
        return sample
    return run


# Each target is driven this long, unrecorded, before its runs: the first requests after a
# quiet spell pay for pools growing and statements being prepared on new connections, and
# whichever target ran first would otherwise pay for all of them.
WARM_UP_SECONDS = 2


def repeat(name: str, runs: int, seconds: int, measure: Callable[[int], Sample],
           cpu: list[CpuUse] | None = None) -> Summary:
    """The runs' summary; with `cpu`, the CPU of each run (not of the warm-up) is added to it."""
    measure(WARM_UP_SECONDS)
    run = metered(measure, cpu) if cpu is not None else measure
    samples = [run(seconds) for _ in range(runs)]
    summary = Summary(name, samples)
    print(f"  {name:<34} {summary.median('rps'):>9,.0f} req/s"
          f"  p50 {summary.median('p50_ms'):6.2f} ms  p99 {summary.median('p99_ms'):7.2f} ms"
          f"  (req/s {summary.spread('rps')})", flush=True)
    return summary

