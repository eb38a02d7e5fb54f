"""`make bench`: the system started as `make run` starts it, driven by wrk from another process.

Every number is measured in the same run as what it is compared with: our gateway, nginx
`auth_request` in front of the same services (the peer), and the service called directly with
a valid identity (the ceiling). Each measurement is repeated; the median and the spread (min to
max) are printed, and written to docs/benchmarks.md.
"""

import argparse
import asyncio
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from shopkit.identity import IDENTITY_HEADER, Identity, Role, sign_identity

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"gateway": 18080, "auth": 18081, "orders": 18082, "tracking": 18083,
         "notifications": 18084}
NGINX_PORT = 18090
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
class Summary:
    name: str
    samples: list[Sample]

    def median(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)

    def spread(self, field: str) -> str:
        values = [getattr(s, field) for s in self.samples]
        return f"{min(values):,.0f}-{max(values):,.0f}" if field == "rps" else (
            f"{min(values):.2f}-{max(values):.2f}")


# Starting and stopping ---------------------------------------------------------------------


@contextmanager
def running_system(log_dir: Path) -> Iterator[None]:
    """All five components under honcho, as `make run` runs them, on ports of their own."""
    env = {**os.environ, "LOG_LEVEL": "WARNING", "FRONT_PROXY_CHECK": "true",
           **{f"{name.upper()}_PORT": str(port) for name, port in PORTS.items()},
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


def repeat(name: str, runs: int, measure: Any) -> Summary:
    samples = [measure() for _ in range(runs)]
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
    login = await _json(session, "POST", "/api/users/login",
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
    admin = os.environ["ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    database = os.environ["AUTH_DATABASE_URL"].rsplit("/", 1)[1]
    return f"{admin}/{database}"


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


def signed(customer: Customer, path: str) -> dict[str, str]:
    """The identity the gateway would sign for this GET; good for IDENTITY_MAX_AGE_SECONDS."""
    caller = Identity(
        Role.USER, uuid.UUID(customer.user_id), uuid.UUID(customer.session_id), "127.0.0.1"
    )
    secret = os.environ["IDENTITY_SECRET"].encode()
    return {IDENTITY_HEADER: sign_identity(caller, secret, "GET", path)}


# Scenarios -------------------------------------------------------------------------------


def authenticated_reads(customer: Customer, runs: int, seconds: int) -> list[tuple[str, list]]:
    results = []
    bearer = {"Authorization": f"Bearer {customer.token}"}
    for label, path, service in (("GET /api/users/me", "/api/users/me", "auth"),
                                 ("GET /api/orders", "/api/orders?limit=20", "orders")):
        print(f"{label}, {runs} runs of {seconds} s, 2 threads, 50 connections", flush=True)
        ours = repeat("gateway", runs, lambda p=path: wrk(
            f"http://127.0.0.1:{PORTS['gateway']}{p}", bearer, seconds, 50))
        peer = repeat("nginx auth_request", runs, lambda p=path: wrk(
            f"http://127.0.0.1:{NGINX_PORT}{p}", bearer, seconds, 50))
        ceiling = repeat(f"{service} directly (ceiling)", runs, lambda p=path, s=service: wrk(
            f"http://127.0.0.1:{PORTS[s]}{p}", signed(customer, p), seconds, 50))
        results.append((label, [ours, peer, ceiling]))
    return results


def order_placement(customers: list[Customer], products: list[str], runs: int,
                    seconds: int) -> tuple[Summary, str]:
    print(f"POST /api/orders, {runs} runs of {seconds} s, 2 threads, 32 connections", flush=True)
    before = asyncio.run(stock_and_orders(customers, products))
    pairs = ";".join(f"{c.token},{c.address_id}" for c in customers)
    summary = repeat("gateway", runs, lambda: wrk(
        f"http://127.0.0.1:{PORTS['gateway']}/api/orders", {}, seconds, 32, ORDER_SCRIPT,
        {"BENCH_CUSTOMERS": pairs, "BENCH_PRODUCTS": ";".join(products)}))
    after = asyncio.run(stock_and_orders(customers, products))
    taken, ordered = before[0] - after[0], after[1] - before[1]
    verdict = (f"stock taken {taken:,}, units ordered {ordered:,}: "
               f"{'0 oversold' if taken == ordered and after[0] >= 0 else 'MISMATCH'}")
    print(f"  {verdict}")
    return summary, verdict


def resident_memory() -> dict[str, float]:
    """MiB resident per component, found by the bench port in its environment."""
    ports = {f"PORT={port}".encode(): name for name, port in PORTS.items()}
    found: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = next((ports[v] for v in environment if v in ports), None)
        rss = re.search(r"VmRSS:\s+(\d+) kB", status)
        if name and rss and b"python" in command:
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


def report(reads: list, orders: tuple[Summary, str], memory: dict[str, dict[str, float]],
           runs: int, seconds: int) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; everything on loopback,",
        "the load generator (wrk, 2 threads) on the same cores as the system.",
        "",
        f"Command: `make bench` (`BENCH_ARGS='--runs {runs} --seconds {seconds}'`). Each figure is",
        "the median of the runs; the spread is the lowest and highest run.",
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
    for label, (ours, peer, ceiling) in reads:
        for summary in (ours, peer, ceiling):
            lines.append(f"| {label} | {summary.name} | {summary.median('rps'):,.0f} "
                         f"({summary.spread('rps')}) | {summary.median('p50_ms'):.2f} | "
                         f"{summary.median('p99_ms'):.2f} |")
    lines += ["", "| request | ours / nginx (req/s) | ours / ceiling (req/s) | "
              "p99 ours vs nginx |", "|---|---|---|---|"]
    for label, (ours, peer, ceiling) in reads:
        lines.append(f"| {label} | {ours.median('rps') / peer.median('rps'):.2f}x | "
                     f"{ours.median('rps') / ceiling.median('rps'):.2f}x | "
                     f"{ours.median('p99_ms'):.2f} vs {peer.median('p99_ms'):.2f} ms |")
    placed, verdict = orders
    lines += [
        "", "## 2. Order placement", "",
        "POST /api/orders through the gateway, 32 connections, each order one unit of one of",
        "the bench products for one of the bench customers (bench/place_order.lua).", "",
        "| orders/s (spread) | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|",
        f"| {placed.median('rps'):,.0f} ({placed.spread('rps')}) | "
        f"{placed.median('p50_ms'):.2f} | {placed.median('p99_ms'):.2f} | "
        f"{sum(s.non_2xx for s in placed.samples)} |",
        "", f"Afterwards: {verdict}.", "",
        "## 4. Resident memory (MiB)", "",
        "| component | at rest | after the load |", "|---|---|---|",
    ]
    for name in PORTS:
        lines.append(f"| {name} | {memory['rest'].get(name, 0):.0f} | "
                     f"{memory['loaded'].get(name, 0):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    log_dir = ROOT / ".bench"  # the processes' output, kept for a look after a failure
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir()
    with running_system(log_dir), running_nginx(log_dir):
        customers, products = asyncio.run(prepare(customers=20, products=50, stock=100_000))
        memory = {"rest": resident_memory()}
        reads = authenticated_reads(customers[0], args.runs, args.seconds)
        orders = order_placement(customers, products, args.runs, args.seconds)
        memory["loaded"] = resident_memory()
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(report(reads, orders, memory, args.runs, args.seconds))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
