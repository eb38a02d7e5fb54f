"""The three scenarios: authenticated reads against nginx and the ceiling, order placement,
and event propagation; and the cost of the gateway's vouching, measured alone."""

import asyncio
import collections
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from bench.cpu import CpuUse, cpu_reading, cpu_use, print_cpu
from bench.isolation import bench_database_dsn
from bench.load import Latencies, Summary, percentiles, repeat, wrk
from bench.processes import NGINX_PORT, PORTS
from bench.shop import (
    Customer,
    new_customer,
    request_json,
    signed,
    stock_and_orders,
    tracking_caught_up,
)
from shopkit.identity import Identity, IdentityKey, Role, sign_identity, verify_identity

ORDER_SCRIPT = Path(__file__).with_name("place_order.lua")


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
        await request_json(self._session, "POST", f"/api/admin/orders/{order.id}/status",
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
            order = await request_json(session, "POST", "/api/orders", customer.token, {
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
        admin = await new_customer(session, admin=True)
        per_customer = -(-rate * seconds * runs // (len(WALK) - 1) // len(customers)) + 2
        orders = await _walking_orders(session, customers, products, per_customer)
        probe = PropagationProbe(session, admin, customers, orders)
        conn = await asyncpg.connect(bench_database_dsn())
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
                    samples[where].append(percentiles(values))
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
