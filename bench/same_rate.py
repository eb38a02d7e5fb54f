"""What an operation costs at one offered rate: ours against a bare ceiling built from the same
libraries (bench/bare.py), or against the service called directly, both driven at the same
rate in the same run. CPU per operation depends on the rate (a process that is busier wakes
less often per request), so a ratio means something only at one rate.

The rate is derived from this machine: a short calibration of our path gives its CPU per
operation, and the rate is the one that keeps the machine half busy (`HALF_THE_MACHINE`),
where neither side queues for a core.
"""

import asyncio
import collections
import contextlib
import math
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from bench.cpu import CpuUse, cpu_reading, cpu_use, print_cpu, system_ms
from bench.isolation import bench_database_dsn
from bench.load import Sample, Summary, hey, metered, open_loop, sample_of
from bench.processes import (
    BARE_PIPELINE,
    BARE_PROXY,
    BARE_PROXY_PORTS,
    EXTRA_PORTS,
    PORTS,
    QUIET_GATEWAY,
    TRACED,
    TRACED_GATEWAY,
    resident_memory,
    running_traced,
    sink_stats,
)
from bench.shop import (
    Customer,
    new_customer,
    request_json,
    seconds_until,
    signed,
    stock_and_orders,
    tracking_caught_up,
)

HALF_THE_MACHINE = 0.5
CALIBRATION_SECONDS = 3
BARE_STOCK = 1_000_000  # each bare product's, more than a run orders
GATEWAY = f"http://127.0.0.1:{PORTS['gateway']}"
BARE = f"http://127.0.0.1:{EXTRA_PORTS[BARE_PIPELINE]}"


def rate_for_half_the_machine(ms_per_operation: float) -> float:
    return HALF_THE_MACHINE * (os.cpu_count() or 1) * 1000 / ms_per_operation


@dataclass
class Measured:
    """One path's runs at the rate: latencies and CPU per operation of each part."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    cpu: list[CpuUse] = field(default_factory=list)

    def ms(self, part: str) -> float:
        return statistics.median(u.ms_per_operation.get(part, 0.0) for u in self.cpu)

    def system_ms(self) -> float:
        return statistics.median(system_ms(u) for u in self.cpu)

    @property
    def summary(self) -> Summary:
        return Summary(self.name, self.samples)

    def print(self, operation: str) -> None:
        s = self.summary
        print(f"  {self.name:<34} {s.median('rps'):>8,.0f}/s  p50 {s.median('p50_ms'):6.2f} ms"
              f"  p99 {s.median('p99_ms'):7.2f} ms  failed {s.total('non_2xx')}", flush=True)
        print_cpu(self.cpu, operation)


# -- one hop: the gateway against a bare proxy hop, the service behind it against direct ------

@dataclass
class HopCosts:
    label: str
    service: str
    rate: float
    # gateway, gateway without access log, the traced gateway (before the traced service),
    # bare hop, direct
    paths: dict[str, Measured]
    spans_per_request: float = math.nan  # what the traced path exported, per request

    def parts(self, path: str) -> tuple[str | None, str]:
        """The parts of `path`'s CPU: the hop's process (None for the service called
        directly) and the service's."""
        if path == TRACED_GATEWAY:
            return TRACED_GATEWAY, TRACED[self.service]
        return (path if path in ("gateway", QUIET_GATEWAY, BARE_PROXY) else None), self.service


@dataclass(frozen=True)
class Hops:
    costs: list[HopCosts]
    resident_traced: dict[str, float]  # MiB at rest of the traced components, once started


def hop_costs(customer: Customer, runs: int, seconds: int, log_dir: Path) -> Hops:
    """The hops, with the traced gateway and services started for them (running_traced)."""
    with running_traced(log_dir):
        resident = {name: mib for name, mib in resident_memory().items()
                    if name in TRACED.values()}
        print("traced, resident at rest: " + ", ".join(
            f"{name} {mib:.1f} MiB" for name, mib in sorted(resident.items())), flush=True)
        return Hops(_hops(customer, runs, seconds), resident)


def _hops(customer: Customer, runs: int, seconds: int) -> list[HopCosts]:
    results = []
    bearer = {"Authorization": f"Bearer {customer.token}"}
    for label, path, service in (("GET /api/users/me", "/api/users/me", "auth"),
                                 ("GET /api/orders", "/api/orders?limit=20", "orders")):
        calibration = Measured("calibration")
        _timed_hey(calibration, f"{GATEWAY}{path}", lambda: bearer, 200, CALIBRATION_SECONDS)
        rate = rate_for_half_the_machine(calibration.system_ms())
        print(f"{label} at {rate:,.0f} req/s (half the machine), {runs} runs of {seconds} s",
              flush=True)
        targets: dict[str, tuple[str, Callable[[], dict[str, str]]]] = {
            "gateway": (f"{GATEWAY}{path}", lambda: bearer),
            QUIET_GATEWAY: (f"http://127.0.0.1:{EXTRA_PORTS[QUIET_GATEWAY]}{path}",
                            lambda: bearer),
            TRACED_GATEWAY: (f"http://127.0.0.1:{EXTRA_PORTS[TRACED_GATEWAY]}{path}",
                             lambda: bearer),
            BARE_PROXY: (f"http://127.0.0.1:{BARE_PROXY_PORTS[service]}{path}",
                         lambda s=service, p=path: signed(customer, s, p)),
            f"{service} directly": (f"http://127.0.0.1:{PORTS[service]}{path}",
                                    lambda s=service, p=path: signed(customer, s, p)),
        }
        paths = {name: Measured(name) for name in targets}
        for url, headers in targets.values():
            hey(url, headers(), rate, 1)  # warm-up
        spans = requests = 0.0
        for _ in range(runs):  # interleaved, so drift over the minutes falls on all alike
            for name, (url, headers) in targets.items():
                exported = sink_stats()["spans"] if name == TRACED_GATEWAY else 0
                _timed_hey(paths[name], url, headers, rate, seconds)
                if name == TRACED_GATEWAY:
                    spans += sink_stats()["spans"] - exported
                    requests += paths[name].samples[-1].rps * seconds
        for measured in paths.values():
            measured.print("request")
        per_request = spans / requests if requests else math.nan
        print(f"  traced: {per_request:.1f} spans exported per request", flush=True)
        results.append(HopCosts(label, service, rate, paths, per_request))
    return results


def _timed_hey(measured: Measured, url: str, headers: Callable[[], dict[str, str]],
               rate: float, seconds: int) -> None:
    run = metered(lambda t: hey(url, headers(), rate, t), measured.cpu)
    measured.samples.append(run(seconds))


# -- a pipeline: ours against the bare one, for orders and for status changes -----------------

@dataclass
class PipelineCosts:
    operation: str
    rate: float
    ours: Measured
    bare: Measured
    verdict: str  # what was checked after the runs
    missed: int = 0


async def _metered(measured: Measured, seconds: float, rate: float,
                   drive: Callable[[], Awaitable[Sample]],
                   settle: Callable[[], Awaitable[None]] | None = None) -> None:
    """One run: the load, then (with `settle`) until its events are all applied, within one
    CPU window."""
    before = cpu_reading()
    sample = await drive()
    if settle is not None:
        await settle()
    measured.samples.append(sample)
    measured.cpu.append(cpu_use(before, cpu_reading(), rate * seconds))


async def orders_against_bare(customers: list[Customer], products: list[str], runs: int,
                              seconds: int) -> PipelineCosts:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        bare_products = (await _post(http, f"{BARE}/products",
                                     {"stock": BARE_STOCK, "count": len(products)}))["ids"]

        async def ours(n: int) -> bool:
            customer = customers[n % len(customers)]
            async with http.post(f"{GATEWAY}/api/orders", json={
                "addressId": customer.address_id,
                "items": [{"productId": products[n % len(products)], "quantity": 1}],
            }, headers={"Authorization": f"Bearer {customer.token}"}) as response:
                await response.read()
                return response.status == 201

        async def bare(n: int) -> bool:
            async with http.post(f"{BARE}/orders", json={
                "userId": customers[n % len(customers)].user_id,
                "productId": bare_products[n % len(bare_products)], "quantity": 1,
            }) as response:
                await response.read()
                return response.status == 201

        async def ours_tracked() -> None:
            if await tracking_caught_up(customers, deadline=60) is None:
                raise SystemExit("tracking did not follow the orders within 60 s")

        calibration = Measured("calibration")
        await _metered(calibration, CALIBRATION_SECONDS, 50,
                       lambda: open_loop(50, CALIBRATION_SECONDS, ours), ours_tracked)
        rate = rate_for_half_the_machine(calibration.system_ms())
        print(f"POST /api/orders at {rate:,.0f} orders/s (half the machine), {runs} runs of"
              f" {seconds} s", flush=True)
        before = await stock_and_orders(customers, products)
        measured = Measured("ours, through the gateway"), Measured(BARE_PIPELINE)
        for _ in range(runs):
            await _metered(measured[0], seconds, rate,
                           lambda: open_loop(rate, seconds, ours), ours_tracked)
            await _metered(measured[1], seconds, rate,
                           lambda: open_loop(rate, seconds, bare), _bare_tracked)
        after = await stock_and_orders(customers, products)
    taken, ordered = before[0] - after[0], after[1] - before[1]
    verdict = (f"stock taken {taken:,}, units ordered {ordered:,}: "
               f"{'0 oversold' if taken == ordered and after[0] >= 0 else 'MISMATCH'}"
               f" (the bare pipeline: {await _bare_stock_verdict()})")
    for m in measured:
        m.print("order")
    print(f"  {verdict}")
    return PipelineCosts("order", rate, *measured, verdict)


async def _bare_tracked(deadline: float = 60) -> None:
    if await seconds_until("SELECT (SELECT count(*) FROM bare.orders)"
                           " = (SELECT count(*) FROM bare.trackings)", deadline=deadline) is None:
        raise SystemExit(f"the bare pipeline did not track its orders within {deadline:.0f} s")


async def _bare_stock_verdict() -> str:
    conn = await asyncpg.connect(bench_database_dsn())
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            taken = await conn.fetchval(
                "SELECT coalesce(sum($1 - stock), 0) FROM bare.products", BARE_STOCK)
            ordered = await conn.fetchval("SELECT coalesce(sum(quantity), 0) FROM bare.orders")
    finally:
        await conn.close()
    return "0 oversold" if taken == ordered else f"MISMATCH: {taken:,} taken, {ordered:,} ordered"


async def _post(http: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with http.post(url, json=body) as response:
        assert response.status < 300, (url, response.status, await response.text())
        return await response.json()


# The statuses an order walks through, one change at a time.
WALK = ["placed", "confirmed", "shipped", "in_transit", "out_for_delivery", "delivered"]
SEEN_WITHIN_SECONDS = 5.0


@dataclass
class WalkingOrder:
    id: str
    user_id: str
    version: int = 1  # WALK[version - 1] is its status


@dataclass
class Change:
    order: WalkingOrder
    answered: float | None = None
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    seen_at: float = 0.0


@dataclass(frozen=True)
class Pipeline:
    """Where a status change is made and where its owner's stream is read."""

    change: Callable[[aiohttp.ClientSession, WalkingOrder, str], Awaitable[None]]
    stream: Callable[[Customer], tuple[str, dict[str, str]]]


class PropagationProbe:
    """Status changes at a steady rate; for each, the time from its response to its arrival on
    the owner's SSE stream. It observes only the stream, so it adds no load of its own. One
    change per order is in flight at a time, so what arrives for an order belongs to its
    change in flight; arriving before the response counts as 0 ms."""

    def __init__(self, http: aiohttp.ClientSession, pipeline: Pipeline,
                 customers: list[Customer], orders: list[WalkingOrder]) -> None:
        self._http = http
        self._pipeline = pipeline
        self._customers = customers
        self._ready = collections.deque(orders)
        self._in_flight: dict[str, Change] = {}
        self.missed = 0

    async def measure(self, rate: float, seconds: float) -> Sample:
        latencies: list[float] = []
        start = time.perf_counter()
        changes = []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            if not self._ready:
                raise SystemExit("the status changes ran out of orders to move; place more")
            changes.append(asyncio.create_task(self._change(self._ready.popleft(), latencies)))
        await asyncio.gather(*changes)
        return sample_of(latencies, rate, 0)

    async def _change(self, order: WalkingOrder, latencies: list[float]) -> None:
        change = Change(order)
        self._in_flight[order.id] = change
        await self._pipeline.change(self._http, order, WALK[order.version])
        change.answered = time.perf_counter()
        order.version += 1
        try:
            await asyncio.wait_for(change.seen.wait(), SEEN_WITHIN_SECONDS)
        except TimeoutError:
            self.missed += 1
            return
        finally:
            del self._in_flight[order.id]
        latencies.append(max(0.0, change.seen_at - change.answered) * 1000)
        if order.version < len(WALK):
            self._ready.append(order)

    async def follow_streams(self) -> None:
        """Reads every owner's stream until cancelled."""
        await asyncio.gather(*(self._follow(c) for c in self._customers))

    async def _follow(self, customer: Customer) -> None:
        url, headers = self._pipeline.stream(customer)
        async with self._http.get(url, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=None)) as response:
            async for line in response.content:
                if line.startswith(b"data:"):
                    order_id = orjson.loads(line[5:])["orderId"]
                    change = self._in_flight.get(order_id)
                    if change is not None and not change.seen.is_set():
                        change.seen_at = time.perf_counter()
                        change.seen.set()


async def status_changes_against_bare(customers: list[Customer], products: list[str],
                                      runs: int, seconds: int) -> PipelineCosts:
    # base_url: new_customer speaks to the gateway by path; everything else by whole URLs.
    async with aiohttp.ClientSession(base_url=GATEWAY,
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        admin = await new_customer(http, admin=True)
        admin_bearer = {"Authorization": f"Bearer {admin.token}"}

        async def change_ours(h: aiohttp.ClientSession, order: WalkingOrder, status: str) -> None:
            async with h.post(f"{GATEWAY}/api/admin/orders/{order.id}/status",
                              json={"status": status}, headers=admin_bearer) as response:
                await response.read()
                assert response.status == 200, response.status

        async def change_bare(h: aiohttp.ClientSession, order: WalkingOrder, status: str) -> None:
            async with h.post(f"{BARE}/orders/{order.id}/status",
                              json={"status": status}) as response:
                await response.read()
                assert response.status == 200, response.status

        ours = Pipeline(change_ours, lambda c: (f"{GATEWAY}/api/notifications/stream",
                                                {"Authorization": f"Bearer {c.token}"}))
        bare = Pipeline(change_bare, lambda c: (f"{BARE}/stream/{c.user_id}", {}))

        # Calibration on orders of their own, then enough orders for every run at the rate.
        calibrating = PropagationProbe(http, ours, customers, await _walking_orders(
            http, customers, products, changes=30 * CALIBRATION_SECONDS, bare=False))
        calibration = Measured("calibration")
        async with streams_open(calibrating):
            await _metered(calibration, CALIBRATION_SECONDS, 30,
                           lambda: calibrating.measure(30, CALIBRATION_SECONDS))
        rate = rate_for_half_the_machine(calibration.system_ms())
        print(f"status changes at {rate:,.0f}/s (half the machine), {runs} runs of {seconds} s",
              flush=True)
        changes = int(rate * seconds * runs) + len(customers)
        probes = (
            PropagationProbe(http, ours, customers, await _walking_orders(
                http, customers, products, changes, bare=False)),
            PropagationProbe(http, bare, customers, await _walking_orders(
                http, customers, products, changes, bare=True)),
        )
        measured = Measured("ours, through the gateway"), Measured(BARE_PIPELINE)
        async with streams_open(probes[0]), streams_open(probes[1]):
            for _ in range(runs):
                for probe, m in zip(probes, measured, strict=True):
                    await _metered(m, seconds, rate,
                                   lambda p=probe: p.measure(rate, seconds))
    for m in measured:
        m.print("change")
    missed = probes[0].missed + probes[1].missed
    verdict = f"changes not on the stream within {SEEN_WITHIN_SECONDS:.0f} s: ours " \
              f"{probes[0].missed}, bare {probes[1].missed}"
    print(f"  {verdict}")
    return PipelineCosts("change", rate, *measured, verdict, missed)


@contextlib.asynccontextmanager
async def streams_open(probe: PropagationProbe) -> AsyncIterator[None]:
    """The probe's streams, read for the block."""
    reading = asyncio.create_task(probe.follow_streams())
    await asyncio.sleep(1)  # SSE sends nothing until an event: give the streams time to open
    try:
        yield
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def _walking_orders(http: aiohttp.ClientSession, customers: list[Customer],
                          products: list[str], changes: int, bare: bool) -> list[WalkingOrder]:
    """Orders for `changes` status changes (five each), placed and tracked."""
    count = -(-changes // (len(WALK) - 1)) + len(customers)
    placing = asyncio.Semaphore(16)
    bare_products = (await _post(http, f"{BARE}/products", {"stock": BARE_STOCK, "count": 4})
                     )["ids"] if bare else []

    async def place(n: int) -> WalkingOrder:
        customer = customers[n % len(customers)]
        async with placing:
            if bare:
                order = await _post(http, f"{BARE}/orders", {
                    "userId": customer.user_id, "productId": bare_products[n % 4],
                    "quantity": 1})
            else:
                order = await request_json(http, "POST", f"{GATEWAY}/api/orders",
                                           customer.token, {
                    "addressId": customer.address_id,
                    "items": [{"productId": products[n % len(products)], "quantity": 1}]})
        return WalkingOrder(order["id"], customer.user_id)

    orders = await asyncio.gather(*(place(n) for n in range(count)))
    if bare:
        await _bare_tracked()
    elif await tracking_caught_up(customers, deadline=60) is None:
        raise SystemExit("tracking did not follow the new orders within 60 s")
    return list(orders)
