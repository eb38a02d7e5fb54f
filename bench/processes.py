"""The processes the bench measures: the system as `make run` starts it, on ports of its own,
and nginx in front of the same services (the peer); which process is which component, and
what each holds in memory."""

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"gateway": 18080, "auth": 18081, "orders": 18082, "tracking": 18083,
         "notifications": 18084}
NGINX_PORT = 18090
# What the bench runs beside the system, each a process of its own (found by BENCH_PROCESS in
# its environment): the bare ceilings (bench/bare.py), and a second gateway in front of the
# same services that writes no access log, to show what the access log costs.
QUIET_GATEWAY = "gateway, no access log"
BARE_PROXY = "bare proxy hop"
BARE_PIPELINE = "bare pipeline"
# Tracing's cost (scenario 2): a gateway, auth and orders with tracing on at the default
# sampling, exporting to an OTLP/HTTP sink of the bench's own (bench/otlp_sink.py).
TRACED = {name: f"{name}, traced" for name in ("gateway", "auth", "orders")}
TRACED_GATEWAY = TRACED["gateway"]
OTLP_SINK = "OTLP sink"
EXTRA_PORTS = {QUIET_GATEWAY: 18091, BARE_PIPELINE: 18093, TRACED_GATEWAY: 18095,
               TRACED["auth"]: 18096, TRACED["orders"]: 18097, OTLP_SINK: 18098}
# A bare proxy hop in front of each service the reads go to.
BARE_PROXY_PORTS = {"auth": 18092, "orders": 18094}
# The bench's customers register from one address and place thousands of orders each, and its
# load comes from one address: far past what the shop allows one client (registrations per
# address, open orders per user, requests in flight). The load measures the paths, not those
# limits.
BENCH_LIMITS = {"REGISTRATIONS_PER_ADDRESS": "1000000", "MAX_OPEN_ORDERS_PER_USER": "1000000000",
                "MAX_REQUESTS_PER_CLIENT": "1000000"}
NGINX_CONF = Path(__file__).with_name("nginx.conf")


def untraced_environment() -> dict[str, str]:
    """The environment without OpenTelemetry's variables: the system's components run with
    tracing off (its cost is measured by components of their own, `running_traced`)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


@contextmanager
def running_system(log_dir: Path) -> Iterator[None]:
    """All five components, as `make run` runs them, on ports of their own."""
    env = {**untraced_environment(), **BENCH_LIMITS,
           # Auth stands in for the gateway behind nginx, vouching to itself and to orders.
           "FRONT_PROXY_CHECK": "true",
           "FRONT_PROXY_SECRETS": orjson.dumps(
               {"orders": os.environ["ORDERS_IDENTITY_SECRET"]}).decode(),
           **{f"{name.upper()}_PORT": str(port) for name, port in PORTS.items()},
           **{f"{name.upper()}_METRICS_PORT": str(port + 100) for name, port in PORTS.items()},
           **{f"{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in PORTS.items()
              if name != "gateway"}}
    with running_process("system", [str(ROOT / "scripts" / "run-components"),
                                    str(ROOT / "Procfile")],
                         env, f"http://127.0.0.1:{PORTS['gateway']}/api/ping", log_dir):
        gateway = {**env, "PORT": str(EXTRA_PORTS[QUIET_GATEWAY]), "METRICS_PORT": "0",
                   "LOG_LEVEL": "WARNING", "RABBITMQ_URL": env["GATEWAY_RABBITMQ_URL"],
                   "BENCH_PROCESS": QUIET_GATEWAY}
        with running_process(QUIET_GATEWAY, [sys.executable, "-m", "gateway"], gateway,
                             f"http://127.0.0.1:{EXTRA_PORTS[QUIET_GATEWAY]}/api/ping", log_dir):
            yield


@contextmanager
def running_traced(log_dir: Path) -> Iterator[None]:
    """Beside the system: the OTLP sink, and a gateway in front of an auth and an orders
    instance of their own (tracking and notifications are the system's), all three traced at
    the default sampling (every request) and exporting to the sink."""
    base = {**untraced_environment(), **BENCH_LIMITS, "METRICS_PORT": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{EXTRA_PORTS[OTLP_SINK]}"}
    services = {
        service: {**base, "PORT": str(EXTRA_PORTS[TRACED[service]]),
                  "IDENTITY_SECRET": os.environ[f"{service.upper()}_IDENTITY_SECRET"],
                  "DATABASE_URL": os.environ[f"{service.upper()}_DATABASE_URL"],
                  "RABBITMQ_URL": os.environ[f"{service.upper()}_RABBITMQ_URL"],
                  # Idle but for the reads sent to it: its relay takes none of the system's
                  # events, its sweeps none of its orders.
                  "OUTBOX_POLL_INTERVAL_SECONDS": "3600",
                  "PLACED_ORDER_SWEEP_INTERVAL_SECONDS": "3600",
                  "BENCH_PROCESS": TRACED[service]}
        for service in ("auth", "orders")
    }
    gateway = {**base, "PORT": str(EXTRA_PORTS[TRACED_GATEWAY]),
               "RABBITMQ_URL": os.environ["GATEWAY_RABBITMQ_URL"],
               **{f"{name.upper()}_URL": f"http://127.0.0.1:{port}"
                  for name, port in PORTS.items() if name != "gateway"},
               **{f"{service.upper()}_URL": f"http://127.0.0.1:{EXTRA_PORTS[TRACED[service]]}"
                  for service in services},
               "BENCH_PROCESS": TRACED_GATEWAY}
    with contextlib.ExitStack() as running:
        sink = f"http://127.0.0.1:{EXTRA_PORTS[OTLP_SINK]}"
        running.enter_context(running_process(
            OTLP_SINK, [sys.executable, "-m", "bench.otlp_sink", "--port",
                        str(EXTRA_PORTS[OTLP_SINK])],
            {**untraced_environment(), "BENCH_PROCESS": OTLP_SINK}, f"{sink}/stats", log_dir))
        for service, env in services.items():
            running.enter_context(running_process(
                TRACED[service], [sys.executable, "-m", f"services.{service}"], env,
                f"http://127.0.0.1:{env['PORT']}/health/ready", log_dir))
        running.enter_context(running_process(
            TRACED_GATEWAY, [sys.executable, "-m", "gateway"], gateway,
            f"http://127.0.0.1:{EXTRA_PORTS[TRACED_GATEWAY]}/api/ping", log_dir))
        yield


def sink_stats() -> dict[str, int]:
    """What the OTLP sink has received so far: exports, bytes, spans."""
    with urllib.request.urlopen(f"http://127.0.0.1:{EXTRA_PORTS[OTLP_SINK]}/stats",
                                timeout=5) as response:
        return orjson.loads(response.read())


@contextmanager
def running_bare(log_dir: Path, database_dsn: str, rabbitmq_url: str) -> Iterator[None]:
    """The bare ceilings (bench/bare.py): a proxy hop in front of each service the reads go
    to, and the pipeline."""
    with contextlib.ExitStack() as running:
        for service, port in BARE_PROXY_PORTS.items():
            running.enter_context(running_process(
                f"{BARE_PROXY} to {service}",
                [sys.executable, "-m", "bench.bare", "proxy", "--port", str(port),
                 "--upstream", f"http://127.0.0.1:{PORTS[service]}"],
                {**os.environ, "BENCH_PROCESS": BARE_PROXY},
                f"http://127.0.0.1:{port}/health/live", log_dir))
        running.enter_context(running_process(
            BARE_PIPELINE,
            [sys.executable, "-m", "bench.bare", "orders",
             "--port", str(EXTRA_PORTS[BARE_PIPELINE]),
             "--database", database_dsn, "--rabbitmq", rabbitmq_url],
            {**os.environ, "BENCH_PROCESS": BARE_PIPELINE},
            f"http://127.0.0.1:{EXTRA_PORTS[BARE_PIPELINE]}/health", log_dir))
        yield


@contextmanager
def running_process(name: str, command: list[str], env: dict[str, str], ready_url: str,
                    log_dir: Path) -> Iterator[None]:
    """`command` in a session of its own, its output in log_dir; ready once `ready_url`
    answers 200; stopped with SIGTERM (its whole session with SIGKILL if that is not enough)."""
    with open(log_dir / f"{name.replace(' ', '-').replace(',', '')}.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT, start_new_session=True)
    try:
        _wait_for(ready_url, process, log_dir)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_nginx(log_dir: Path) -> Iterator[None]:
    conf = NGINX_CONF.read_text()
    for name, port in PORTS.items():
        conf = conf.replace(f"@{name.upper()}_PORT@", str(port))
    conf = conf.replace("@NGINX_PORT@", str(NGINX_PORT)).replace("@LOG_DIR@", str(log_dir))
    (log_dir / "nginx.conf").write_text(conf)
    with running_process("nginx", [tool("nginx"), "-p", str(log_dir),
                                   "-c", str(log_dir / "nginx.conf"), "-g", "daemon off;"],
                         dict(os.environ), f"http://127.0.0.1:{NGINX_PORT}/nginx-alive",
                         log_dir):
        yield


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


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                   else None)
    if found is None:
        raise SystemExit(f"{name} is missing: scripts/ensure-bench-tools installs it")
    return found


def components_by_pid() -> dict[str, str]:
    """The bench's Python processes: the five components, found by the port in their
    environment, and the others it runs, by their BENCH_PROCESS."""
    names = {f"PORT={port}".encode(): name for name, port in PORTS.items()}
    names |= {f"BENCH_PROCESS={name}".encode(): name for name in (*EXTRA_PORTS, BARE_PROXY)}
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        tagged = [names[v] for v in environment if v in names]
        if tagged and b"python" in command:
            found[pid] = tagged[0]
    return found


def resident_memory(field: str = "VmRSS") -> dict[str, float]:
    """MiB resident per component: all of it (VmRSS), or the part that is pages of files,
    mostly shared libraries (RssFile)."""
    found: dict[str, float] = {}
    for pid, name in components_by_pid().items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if rss := re.search(rf"{field}:\s+(\d+) kB", status):
            found[name] = int(rss.group(1)) / 1024
    return found


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return (f"{os.cpu_count()} cores ({cpu}), {memory / 1024 / 1024:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
