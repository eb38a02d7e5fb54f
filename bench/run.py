"""`make bench`: the system started as `make run` starts it, driven by wrk from another process.

Every number is measured in the same run as what it is compared with: our gateway, nginx
`auth_request` in front of the same services (the peer), and the service called directly with
a valid identity (the ceiling). Each measurement is repeated; the median and the spread (min to
max) are printed, and written to docs/benchmarks.md.
"""

import argparse
import asyncio
import collections
import datetime
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson

from shopkit.bootstrap import with_database
from shopkit.identity import (
    IDENTITY_HEADER,
    Identity,
    IdentityKey,
    Role,
    sign_identity,
    verify_identity,
)

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"gateway": 18080, "auth": 18081, "orders": 18082, "tracking": 18083,
         "notifications": 18084}
NGINX_PORT = 18090
# The bench's customers register from one address and place thousands of orders each, and its
# load comes from one address: far past what the shop allows one client (registrations per
# address, open orders per user, requests in flight). The load measures the paths, not those
# limits.
BENCH_LIMITS = {"REGISTRATIONS_PER_ADDRESS": "1000000", "MAX_OPEN_ORDERS_PER_USER": "1000000000",
                "MAX_REQUESTS_PER_CLIENT": "1000000"}
NGINX_CONF = Path(__file__).with_name("nginx.conf")
ORDER_SCRIPT = Path(__file__).with_name("place_order.lua")
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


@dataclass(frozen=True)
class Latencies:
    """One run of scenario 3, for one place a change shows in."""

    changes: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Summary:
    name: str
    samples: list[Sample] | list[Latencies]

    def median(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)

    def spread(self, field: str) -> str:
        values = [getattr(s, field) for s in self.samples]
        return f"{min(values):,.0f}-{max(values):,.0f}" if field == "rps" else (
            f"{min(values):.2f}-{max(values):.2f}")

    def total(self, field: str) -> int:
        return sum(getattr(s, field) for s in self.samples)


# Starting and stopping ---------------------------------------------------------------------


@contextmanager
def running_system(log_dir: Path) -> Iterator[None]:
    """All five components under honcho, as `make run` runs them, on ports of their own."""
    env = {**os.environ, "LOG_LEVEL": "WARNING", **BENCH_LIMITS,
           # Auth stands in for the gateway behind nginx, vouching to itself and to orders.
           "FRONT_PROXY_CHECK": "true",
           "FRONT_PROXY_SECRETS": orjson.dumps(
               {"orders": os.environ["ORDERS_IDENTITY_SECRET"]}).decode(),
           **{f"{name.upper()}_PORT": str(port) for name, port in PORTS.items()},
           **{f"{name.upper()}_METRICS_PORT": str(port + 1000) for name, port in PORTS.items()},
           **{f"{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in PORTS.items()
              if name != "gateway"}}
    with open(log_dir / "system.log", "wb") as log:
        process = subprocess.Popen(
            ["honcho", "start", "--env", "/dev/null", "--procfile", str(ROOT / "Procfile")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )
    try:
        _wait_for(f"http://127.0.0.1:{PORTS['gateway']}/api/ping", process, log_dir)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def running_nginx(log_dir: Path) -> Iterator[None]:
    conf = NGINX_CONF.read_text()
    for name, port in PORTS.items():
        conf = conf.replace(f"@{name.upper()}_PORT@", str(port))
    conf = conf.replace("@NGINX_PORT@", str(NGINX_PORT)).replace("@LOG_DIR@", str(log_dir))
    (log_dir / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [_tool("nginx"), "-p", str(log_dir), "-c", str(log_dir / "nginx.conf"),
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=open(log_dir / "nginx.out", "wb"),  # noqa: SIM115
    )
    try:
        _wait_for(f"http://127.0.0.1:{NGINX_PORT}/nginx-alive", process, log_dir)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(url: str, process: subprocess.Popen, log_dir: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a process exited while starting; see {log_dir}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s; see {log_dir}")


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                   else None)
    if found is None:
        raise SystemExit(f"{name} is missing: scripts/ensure-bench-tools installs it")
    return found


# CPU: what each part of the machine spends per operation -----------------------------------

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


def _process_cpu(stat: str, children: bool = False) -> float:
    """Seconds of CPU from a /proc/<pid>/stat line: user and system time, and with `children`
    those of its children that have been waited for (wrk, for the bench)."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def _machine_cpu(proc_stat: str) -> tuple[float, float]:
    """Busy and total seconds of all cores from /proc/stat. Steal (time the hypervisor gave
    to others) is neither ours nor idle, and is left out of both."""
    user, nice, system, idle, iowait, irq, softirq = (
        int(n) for n in proc_stat.splitlines()[0].split()[1:8])
    busy = user + nice + system + irq + softirq
    return busy / CLOCK_TICKS, (busy + idle + iowait) / CLOCK_TICKS


def cpu_reading() -> CpuReading:
    components = _components_by_pid()
    by_part: dict[str, float] = collections.defaultdict(float)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        part = components.get(pid) or INFRASTRUCTURE.get(comm)
        if int(pid) == os.getpid():
            by_part[LOAD] += _process_cpu(stat, children=True)
        elif part is not None:
            by_part[part] += _process_cpu(stat)
    busy, total = _machine_cpu(Path("/proc/stat").read_text())
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


def metered(measure: Callable[[int], Sample], uses: list[CpuUse]) -> Callable[[int], Sample]:
    """`measure`, with the CPU of each run per request added to `uses`."""
    def run(seconds: int) -> Sample:
        before = cpu_reading()
        sample = measure(seconds)
        uses.append(cpu_use(before, cpu_reading(), sample.rps * seconds))
        return sample
    return run


CPU_PARTS = (*PORTS, "Postgres", "RabbitMQ", "nginx", LOAD, "other")


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


# Load ----------------------------------------------------------------------------------------


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int,
        script: Path | None = None, env: dict[str, str] | None = None) -> Sample:
    command = [_tool("wrk"), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
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


# The shop's data for the load ------------------------------------------------------------


@dataclass
class Customer:
    token: str
    user_id: str
    session_id: str
    address_id: str


async def _json(session: aiohttp.ClientSession, method: str, path: str, token: str | None = None,
                body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, path, json=body, headers=headers) as response:
        answer = await response.json()
        assert response.status < 300, (method, path, answer)
        return answer["data"]


async def _customer(session: aiohttp.ClientSession, admin: bool = False) -> Customer:
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = secrets.token_urlsafe(12)
    user = await _json(session, "POST", "/api/users/register",
                       body={"email": email, "password": password, "name": "Bench"})
    if admin:
        await _promote(user["id"])
    login = await _json(session, "POST", "/api/admin/login" if admin else "/api/users/login",
                        body={"email": email, "password": password})
    sessions = await _json(session, "GET", "/api/users/sessions", login["token"])
    current = next(s["id"] for s in sessions["items"] if s["current"])
    address = await _json(session, "POST", "/api/addresses", login["token"], {
        "recipient": "Bench", "line1": "1 Main St", "city": "Springfield", "postalCode": "1",
        "country": "US"})
    return Customer(login["token"], user["id"], current, address["id"])


async def _promote(user_id: str) -> None:
    conn = await asyncpg.connect(_shop_admin_dsn())
    try:
        await conn.execute("UPDATE auth.users SET role = 'admin' WHERE id = $1::uuid", user_id)
    finally:
        await conn.close()


def _shop_admin_dsn() -> str:
    """The superuser on the services' database (bootstrap's ADMIN_DATABASE_URL names its own)."""
    database = urlsplit(os.environ["AUTH_DATABASE_URL"]).path.lstrip("/")
    return with_database(os.environ["ADMIN_DATABASE_URL"], database)


async def vacuumed() -> bool:
    """Vacuums and analyses the services' database, as autovacuum would have by now; says
    whether autovacuum is on. Where it is off (as in this project's CI machines), each
    scenario would otherwise start on every dead row the ones before it left: the outbox
    alone leaves one per event."""
    conn = await asyncpg.connect(_shop_admin_dsn())
    try:
        await conn.execute("VACUUM ANALYZE")
        return await conn.fetchval("SELECT current_setting('autovacuum')::bool")
    finally:
        await conn.close()


async def prepare(customers: int, products: int, stock: int) -> tuple[list[Customer], list[str]]:
    base = f"http://127.0.0.1:{PORTS['gateway']}"
    async with aiohttp.ClientSession(base_url=base) as session:
        admin = await _customer(session, admin=True)
        people = [await _customer(session) for _ in range(customers)]
        items = [
            (await _json(session, "POST", "/api/admin/products", admin.token, {
                "sku": f"BENCH-{secrets.token_hex(6)}", "name": "Bench item",
                "priceCents": 100, "stock": stock}))["id"]
            for _ in range(products)
        ]
    return people, items


async def stock_and_orders(customers: list[Customer], products: list[str]) -> tuple[int, int]:
    """Stock taken from the bench products, and units in the bench customers' orders."""
    conn = await asyncpg.connect(_shop_admin_dsn())
    # One snapshot for both: an order still in flight when wrk stops commits its stock and
    # its items together, and two separate reads could straddle it.
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            stock = await conn.fetchval(
                "SELECT sum(stock) FROM orders.products WHERE id = any($1::uuid[])", products)
            ordered = await conn.fetchval(
                """SELECT coalesce(sum(i.quantity), 0) FROM orders.order_items i
                   JOIN orders.orders o ON o.id = i.order_id
                   WHERE o.user_id = any($1::uuid[])""",
                [c.user_id for c in customers])
    finally:
        await conn.close()
    return int(stock), int(ordered)


async def tracking_caught_up(customers: list[Customer], deadline: float = 120) -> float | None:
    """Seconds from now until every order of the bench customers is tracked (its event went
    through the outbox, RabbitMQ and the tracking consumer), or None past the deadline. The
    events are part of what an order costs: throughput that leaves them behind is not kept."""
    conn = await asyncpg.connect(_shop_admin_dsn())
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline:
            untracked = await conn.fetchval(
                """SELECT count(*) FROM orders.orders o
                   WHERE o.user_id = any($1::uuid[]) AND NOT EXISTS (
                       SELECT FROM tracking.trackings t WHERE t.order_id = o.id)""",
                [c.user_id for c in customers])
            if untracked == 0:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        return None
    finally:
        await conn.close()


def signed(customer: Customer, service: str, path: str) -> dict[str, str]:
    """The identity the gateway would sign for this GET; good for IDENTITY_MAX_AGE_SECONDS."""
    caller = Identity(
        Role.USER, uuid.UUID(customer.user_id), uuid.UUID(customer.session_id), "127.0.0.1"
    )
    return {IDENTITY_HEADER: sign_identity(caller, _identity_key(service), "GET", path)}


def _identity_key(service: str) -> IdentityKey:
    return IdentityKey(service, os.environ[f"{service.upper()}_IDENTITY_SECRET"].encode())


def identity_cost(repeats: int = 20_000) -> tuple[float, float]:
    """Microseconds of CPU to sign one identity (the gateway, per proxied request) and to
    verify one (the service), for an order's request with its body."""
    key = IdentityKey("orders", secrets.token_bytes(32))
    caller = Identity(Role.USER, uuid.uuid4(), uuid.uuid4(), "127.0.0.1", time.time() + 3600)
    body = orjson.dumps({"addressId": str(uuid.uuid4()),
                         "items": [{"productId": str(uuid.uuid4()), "quantity": 1}]})
    started = time.process_time()
    for _ in range(repeats):
        header = sign_identity(caller, key, "POST", "/api/orders", body)
    signed_at = time.process_time()
    for _ in range(repeats):
        verify_identity(header, key, "POST", "/api/orders", body, max_age=30)
    verified_at = time.process_time()
    return ((signed_at - started) / repeats * 1e6, (verified_at - signed_at) / repeats * 1e6)


# Scenarios -------------------------------------------------------------------------------


def authenticated_reads(customer: Customer, runs: int, seconds: int) -> list[tuple[str, list]]:
    results = []
    bearer = {"Authorization": f"Bearer {customer.token}"}
    for label, path, service in (("GET /api/users/me", "/api/users/me", "auth"),
                                 ("GET /api/orders", "/api/orders?limit=20", "orders")):
        print(f"{label}, {runs} runs of {seconds} s, 2 threads, 50 connections", flush=True)
        targets = (("gateway", PORTS["gateway"], bearer),
                   ("nginx auth_request", NGINX_PORT, bearer),
                   (f"{service} directly (ceiling)", PORTS[service],
                    signed(customer, service, path)))
        summaries = []
        for name, port, headers in targets:
            cpu: list[CpuUse] = []
            summaries.append(repeat(
                name, runs, seconds,
                lambda t, u=f"http://127.0.0.1:{port}{path}", h=headers: wrk(u, h, t, 50), cpu))
            print_cpu(cpu, "request")
        results.append((label, summaries))
    return results


def order_placement(customers: list[Customer], products: list[str], runs: int,
                    seconds: int) -> tuple[Summary, str, list[CpuUse]]:
    print(f"POST /api/orders, {runs} runs of {seconds} s, 2 threads, 32 connections", flush=True)
    before = asyncio.run(stock_and_orders(customers, products))
    pairs = ";".join(f"{c.token},{c.address_id}" for c in customers)
    cpu: list[CpuUse] = []
    summary = repeat("gateway", runs, seconds, lambda t: wrk(
        f"http://127.0.0.1:{PORTS['gateway']}/api/orders", {}, t, 32, ORDER_SCRIPT,
        {"BENCH_CUSTOMERS": pairs, "BENCH_PRODUCTS": ";".join(products)}), cpu)
    print_cpu(cpu, "order")
    after = asyncio.run(stock_and_orders(customers, products))
    caught_up = asyncio.run(tracking_caught_up(customers))
    taken, ordered = before[0] - after[0], after[1] - before[1]
    verdict = (f"stock taken {taken:,}, units ordered {ordered:,}: "
               f"{'0 oversold' if taken == ordered and after[0] >= 0 else 'MISMATCH'}; "
               + ("every order tracked (its event consumed) "
                  f"{caught_up:.1f} s after the load stopped" if caught_up is not None
                  else "ORDERS STILL UNTRACKED 120 s after the load stopped"))
    print(f"  {verdict}")
    return summary, verdict, cpu


# The statuses an order walks through, one change at a time, in scenario 3.
WALK = ["placed", "confirmed", "shipped", "in_transit", "out_for_delivery", "delivered"]
WHERE_SEEN = ("tracking", "notification", "stream")
# Tracking and the notification list are read from their tables this often (the stream is
# pushed to us): those two figures may read up to this late.
POLL_SECONDS = 0.001


@dataclass
class WalkingOrder:
    id: str
    user_id: str
    version: int = 1  # WALK[version - 1] is its status


@dataclass
class Change:
    order: WalkingOrder
    sent_at: float = field(default_factory=time.time)  # the wall clock, which Postgres shares
    answered: float | None = None
    seen: dict[str, float] = field(default_factory=dict)
    everywhere: asyncio.Event = field(default_factory=asyncio.Event)

    def see(self, where: str) -> None:
        self.seen.setdefault(where, time.perf_counter())
        if len(self.seen) == len(WHERE_SEEN):
            self.everywhere.set()


class PropagationProbe:
    """Status changes at a steady rate; for each, when it shows in tracking, in the owner's
    notification list and on the owner's SSE stream, measured from the change's response.

    One change per order is in flight at a time, so whatever shows for an order belongs to its
    change in flight. Something seen before the response arrived counts as 0 ms.
    """

    def __init__(self, session: aiohttp.ClientSession, admin: Customer,
                 customers: list[Customer], orders: list[WalkingOrder]) -> None:
        self._session = session
        self._admin = admin
        self._customers = customers
        self._ready = collections.deque(orders)
        self._in_flight: dict[str, Change] = {}
        self._latencies: dict[str, list[float]] = {}
        self.missed = 0

    async def measure(self, rate: int, seconds: int) -> dict[str, list[float]]:
        """Milliseconds from the response to being seen, per place, for one run."""
        self._latencies = {where: [] for where in WHERE_SEEN}
        start = time.perf_counter()
        changes = []
        for n in range(rate * seconds):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            if not self._ready:
                raise SystemExit("scenario 3 ran out of orders to move; place more")
            changes.append(asyncio.create_task(self._change(self._ready.popleft())))
        await asyncio.gather(*changes)
        return self._latencies

    async def _change(self, order: WalkingOrder) -> None:
        change = Change(order)
        self._in_flight[order.id] = change
        status = WALK[order.version]
        await _json(self._session, "POST", f"/api/admin/orders/{order.id}/status",
                    self._admin.token, {"status": status})
        change.answered = time.perf_counter()
        order.version += 1
        try:
            await asyncio.wait_for(change.everywhere.wait(), 5.0)
        except TimeoutError:
            self.missed += 1
            return
        finally:
            del self._in_flight[order.id]
        for where, when in change.seen.items():
            self._latencies[where].append(max(0.0, when - change.answered) * 1000)
        if order.version < len(WALK):
            self._ready.append(order)

    async def follow_streams(self) -> None:
        """Reads every owner's stream until cancelled."""
        await asyncio.gather(*(self._follow(c) for c in self._customers))

    async def _follow(self, customer: Customer) -> None:
        async with self._session.get(
            "/api/notifications/stream", headers={"Authorization": f"Bearer {customer.token}"},
            timeout=aiohttp.ClientTimeout(total=None),
        ) as response:
            async for line in response.content:
                if line.startswith(b"data:"):
                    order_id = orjson.loads(line[5:])["orderId"]
                    if (change := self._in_flight.get(order_id)) is not None:
                        change.see("stream")

    async def poll_tables(self, conn: asyncpg.Connection) -> None:
        """Reads, until cancelled, whether each change in flight shows in tracking's table and
        in the owner's notifications."""
        while True:
            waiting = [c for c in self._in_flight.values()
                       if "tracking" not in c.seen or "notification" not in c.seen]
            if waiting:
                rows = await conn.fetch(
                    """
                    SELECT p.order_id::text AS order_id,
                        (SELECT version FROM tracking.trackings t WHERE t.order_id = p.order_id)
                            AS tracked,
                        EXISTS (SELECT FROM notifications.notifications n
                                WHERE n.user_id = p.user_id
                                  AND n.created_at >= to_timestamp(p.sent_at)
                                  AND n.order_id = p.order_id) AS notified
                    FROM unnest($1::uuid[], $2::uuid[], $3::float8[])
                        AS p(order_id, user_id, sent_at)
                    """,
                    [c.order.id for c in waiting], [c.order.user_id for c in waiting],
                    [c.sent_at for c in waiting])
                for row in rows:
                    change = self._in_flight.get(row["order_id"])
                    if change is None:
                        continue
                    # The change makes the order's next version. Its notification is the
                    # order's first one since the change was sent: the one before was seen
                    # before this change was made.
                    expected = change.order.version + (0 if change.answered else 1)
                    if (row["tracked"] or 0) >= expected:
                        change.see("tracking")
                    if row["notified"]:
                        change.see("notification")
            await asyncio.sleep(POLL_SECONDS)


async def _walking_orders(session: aiohttp.ClientSession, customers: list[Customer],
                          products: list[str], per_customer: int) -> list[WalkingOrder]:
    """Places the orders scenario 3 moves along, and waits until tracking follows them all."""
    placing = asyncio.Semaphore(16)

    async def place(customer: Customer, n: int) -> WalkingOrder:
        async with placing:
            order = await _json(session, "POST", "/api/orders", customer.token, {
                "addressId": customer.address_id,
                "items": [{"productId": products[n % len(products)], "quantity": 1}]})
        return WalkingOrder(order["id"], customer.user_id)

    orders = await asyncio.gather(*(place(c, n) for c in customers for n in range(per_customer)))
    if await tracking_caught_up(customers, deadline=60) is None:
        raise SystemExit("tracking did not follow the new orders within 60 s")
    return list(orders)


async def event_propagation(customers: list[Customer], products: list[str], rate: int,
                            runs: int, seconds: int
                            ) -> tuple[dict[str, Summary], int, list[CpuUse]]:
    print(f"event propagation, {runs} runs of {seconds} s at {rate} status changes/s",
          flush=True)
    base = f"http://127.0.0.1:{PORTS['gateway']}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
        admin = await _customer(session, admin=True)
        per_customer = -(-rate * seconds * runs // (len(WALK) - 1) // len(customers)) + 2
        orders = await _walking_orders(session, customers, products, per_customer)
        probe = PropagationProbe(session, admin, customers, orders)
        conn = await asyncpg.connect(_shop_admin_dsn())
        background = [asyncio.create_task(probe.follow_streams()),
                      asyncio.create_task(probe.poll_tables(conn))]
        try:
            await asyncio.sleep(1)  # the streams are open
            samples: dict[str, list[Latencies]] = {where: [] for where in WHERE_SEEN}
            cpu = []
            for _ in range(runs):
                before = cpu_reading()
                latencies = await probe.measure(rate, seconds)
                cpu.append(cpu_use(before, cpu_reading(), rate * seconds))
                for where, values in latencies.items():
                    samples[where].append(_percentiles(values))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await conn.close()
    summaries = {where: Summary(f"visible in {where}", s) for where, s in samples.items()}
    for summary in summaries.values():
        print(f"  {summary.name:<34} p50 {summary.median('p50_ms'):6.2f} ms"
              f"  p99 {summary.median('p99_ms'):7.2f} ms"
              f"  (p99 {summary.spread('p99_ms')})", flush=True)
    print(f"  changes never seen within 5 s: {probe.missed}")
    print_cpu(cpu, "change")
    return summaries, probe.missed, cpu


def _percentiles(values: list[float]) -> Latencies:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return Latencies(changes=len(values), p50_ms=cuts[49], p99_ms=cuts[98])


def _components_by_pid() -> dict[str, str]:
    """The bench's five components, found by the port in their environment."""
    ports = {f"PORT={port}".encode(): name for name, port in PORTS.items()}
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        name = next((ports[v] for v in environment if v in ports), None)
        if name and b"python" in command:
            found[pid] = name
    return found


def resident_memory(field: str = "VmRSS") -> dict[str, float]:
    """MiB resident per component: all of it (VmRSS), or the part that is pages of files,
    mostly shared libraries (RssFile)."""
    found: dict[str, float] = {}
    for pid, name in _components_by_pid().items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if rss := re.search(rf"{field}:\s+(\d+) kB", status):
            found[name] = int(rss.group(1)) / 1024
    return found


# Report ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return (f"{os.cpu_count()} cores ({cpu}), {memory / 1024 / 1024:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


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


if __name__ == "__main__":
    main()
