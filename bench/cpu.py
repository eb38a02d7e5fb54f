"""What each part of the machine spends per operation, read from /proc."""

import collections
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.processes import BARE_PROXY, EXTRA_PORTS, PORTS, components_by_pid

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Processes by their name in /proc (comm), beside the components found by their port.
INFRASTRUCTURE = {"postgres": "Postgres", "beam.smp": "RabbitMQ", "erl_child_setup": "RabbitMQ",
                  "epmd": "RabbitMQ", "inet_gethost": "RabbitMQ", "nginx": "nginx"}
LOAD = "load (wrk or the probe)"


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds used so far: by each part of the load (`by_part`), and by all cores of the
    machine (`busy`, out of `total`, both counted since boot)."""

    by_part: dict[str, float]
    busy: float
    total: float


@dataclass(frozen=True)
class CpuUse:
    """What one run cost: ms of CPU per operation for each part, and how busy the cores were."""

    ms_per_operation: dict[str, float]
    cores_busy: float


def process_cpu(stat: str, children: bool = False) -> float:
    """Seconds of CPU from a /proc/<pid>/stat line: user and system time, and with `children`
    those of its children that have been waited for (wrk, for the bench)."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def machine_cpu(proc_stat: str) -> tuple[float, float]:
    """Busy and total seconds of all cores from /proc/stat. Steal (time the hypervisor gave
    to others) is neither ours nor idle, and is left out of both."""
    user, nice, system, idle, iowait, irq, softirq = (
        int(n) for n in proc_stat.splitlines()[0].split()[1:8])
    busy = user + nice + system + irq + softirq
    return busy / CLOCK_TICKS, (busy + idle + iowait) / CLOCK_TICKS


def cpu_reading() -> CpuReading:
    components = components_by_pid()
    by_part: dict[str, float] = collections.defaultdict(float)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        part = components.get(pid) or INFRASTRUCTURE.get(comm)
        if int(pid) == os.getpid():
            by_part[LOAD] += process_cpu(stat, children=True)
        elif part is not None:
            by_part[part] += process_cpu(stat)
    busy, total = machine_cpu(Path("/proc/stat").read_text())
    return CpuReading(dict(by_part), busy, total)


def cpu_use(before: CpuReading, after: CpuReading, operations: float) -> CpuUse:
    """ms of CPU per operation between two readings, per part, and "other" for the rest of
    the machine's busy time (the kernel's network work, other processes)."""
    spent = {part: after.by_part[part] - before.by_part.get(part, 0.0)
             for part in after.by_part}
    spent["other"] = max(0.0, (after.busy - before.busy) - sum(spent.values()))
    share = (after.busy - before.busy) / max(after.total - before.total, 1e-9)
    return CpuUse(
        {part: 1000 * seconds / max(operations, 1) for part, seconds in spent.items()},
        share * (os.cpu_count() or 1),
    )


CPU_PARTS = (*PORTS, *EXTRA_PORTS, BARE_PROXY, "Postgres", "RabbitMQ", "nginx", LOAD, "other")


def system_ms(use: CpuUse) -> float:
    """ms of CPU per operation of the whole machine but the load that drove it."""
    return sum(ms for part, ms in use.ms_per_operation.items() if part != LOAD)


def cpu_summary(uses: list[CpuUse]) -> tuple[dict[str, float], float]:
    """The median of the runs' ms per operation for each part, and of the cores busy."""
    per_part = {part: statistics.median(u.ms_per_operation.get(part, 0.0) for u in uses)
                for part in CPU_PARTS}
    return per_part, statistics.median(u.cores_busy for u in uses)


def print_cpu(uses: list[CpuUse], operation: str) -> None:
    per_part, busy = cpu_summary(uses)
    parts = ", ".join(f"{part} {ms:.2f}" for part, ms in per_part.items() if ms >= 0.005)
    print(f"  ms of CPU per {operation}: {parts}; all {sum(per_part.values()):.2f};"
          f" cores busy {busy:.2f} of {os.cpu_count()}", flush=True)
