"""The real processes, started as `make run`'s Procfile starts them: `python -m <component>`,
configured by environment variables only, each on a free port with its output in a log file.

One synchronous core (`Processes`: Popen, signals, polling with a deadline) serves both faces:
`launched_system_sync` for synchronous callers (schemathesis, say), and `launched_system` for
async tests, whose blocking waits run in a worker thread so that the test's event loop keeps
driving its own load meanwhile.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shopkit.bootstrap import ServiceDatabase
from tests.harness import IDENTITY_SECRETS, TEST_SETTINGS, component_rabbitmq_url

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "orders", "tracking", "notifications")
COMPONENTS = (*SERVICES, "gateway")
MODULES = {"gateway": "gateway", **{name: f"services.{name}" for name in SERVICES}}

# Only what a Python process needs from the parent. Settings come from the test alone: a PORT
# or DATABASE_URL exported in the developer's shell (or .env) must not leak into a component.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
# Short timeouts keep shutdown and retry tests quick; small pools keep a test run (whose own
# in-process system holds connections too) well below Postgres's max_connections (100 by
# default); the per-address sign-in limit is out of the way since every test client is
# 127.0.0.1.
DEFAULT_ENV: dict[str, dict[str, str]] = {
    "all": {"HOST": "127.0.0.1", "LOG_LEVEL": "INFO", "SHUTDOWN_TIMEOUT_SECONDS": "2",
            "PYTHONUNBUFFERED": "1"},
    "services": {"STARTUP_TIMEOUT_SECONDS": "10", "CONSUMER_RETRY_DELAY_SECONDS": "0.05",
                 "DB_POOL_MAX_SIZE": "4"},
    # The shared test system's limits, as the in-process system has them.
    **{
        component: {name.upper(): str(value) for name, value in settings.items()}
        for component, settings in TEST_SETTINGS.items()
    },
}
START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0
LOG_TAIL_LINES = 40

T = TypeVar("T")


def poll(check: Callable[[], T], deadline_seconds: float, what: str, interval: float = 0.05) -> T:
    """Calls `check` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_seconds} s")
        time.sleep(interval)
    return result


def free_ports(count: int) -> list[int]:
    """Ports the kernel has just handed out; held open together so that none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# No proxy from the environment: the components are on this machine.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers_200(url: str) -> bool:
    try:
        with _HTTP.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # HTTPError (a 503 while starting) is a URLError
        return False


@dataclass
class Process:
    name: str  # "orders" for the first instance, "orders-2" for the second...
    component: str
    port: int
    metrics_port: int
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        # A gateway's ping is 200 only once every service behind it is ready too.
        return self.url + ("/api/ping" if self.component == "gateway" else "/health/ready")

    @property
    def live_url(self) -> str:
        return self.url + "/health/live"

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is running already"
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                [sys.executable, "-m", MODULES[self.component]],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Processes:
    """Every component, `instances` times; gateway n talks to instance n of each service."""

    def __init__(
        self,
        databases: Mapping[str, ServiceDatabase],
        log_dir: Path | None = None,
        instances: int = 1,
        env_overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`env_overrides` keys: "all", "services", a component ("orders": every instance of
        it) or a process name ("orders-2"); later ones in that list win."""
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="shop-processes-"))
        self.instances = instances
        self._overrides = env_overrides or {}
        self._databases = databases
        ports = iter(free_ports(2 * len(COMPONENTS) * instances))
        self.processes: dict[str, Process] = {}
        for n in range(1, instances + 1):
            for component in COMPONENTS:
                name = _instance(component, n)
                self.processes[name] = self._process(
                    name, component, next(ports), next(ports), n
                )

    def _process(
        self, name: str, component: str, port: int, metrics_port: int, instance: int
    ) -> Process:
        env = {key: os.environ[key] for key in INHERITED if key in os.environ}
        env |= {"PORT": str(port), "METRICS_PORT": str(metrics_port),
                "RABBITMQ_URL": component_rabbitmq_url(component)}
        if component == "gateway":
            env |= {
                f"{service.upper()}_URL": self.processes[_instance(service, instance)].url
                for service in SERVICES
            }
            env |= {f"{service.upper()}_IDENTITY_SECRET": IDENTITY_SECRETS[service]
                    for service in SERVICES}
        else:
            env["DATABASE_URL"] = self._databases[component].dsn
            env["IDENTITY_SECRET"] = IDENTITY_SECRETS[component]
        layers = ["all", *([] if component == "gateway" else ["services"]), component, name]
        for source in (DEFAULT_ENV, self._overrides):
            for layer in layers:
                env |= source.get(layer, {})
        return Process(name, component, port, metrics_port, env, self.log_dir / f"{name}.log")

    # What tests look at ------------------------------------------------------------------------

    @property
    def gateway_urls(self) -> list[str]:
        return [self.url(_instance("gateway", n)) for n in range(1, self.instances + 1)]

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls[0]

    def url(self, name: str) -> str:
        return self.processes[name].url

    def instances_of(self, component: str) -> list[str]:
        return [_instance(component, n) for n in range(1, self.instances + 1)]

    def logs(self) -> str:
        """The tail of every log, for a failing test's report."""
        return "\n".join(
            f"----- {p.name} (exit {p.returncode}) {p.log_path}\n{p.log_tail()}"
            for p in self.processes.values()
        )

    # Actions: instantaneous ---------------------------------------------------------------------

    def start(self, *names: str) -> None:
        for name in names or self.processes:
            self.processes[name].start()

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.processes[name].send(sig)

    # Waits: blocking, with a deadline -----------------------------------------------------------

    def wait_ready(self, *names: str, deadline_seconds: float = START_DEADLINE_SECONDS) -> None:
        for name in names or self.processes:
            process = self.processes[name]
            try:
                poll(lambda p=process: self._ready(p), deadline_seconds, f"{name} ready")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{process.log_tail()}") from None

    def _ready(self, process: Process) -> bool:
        if not process.running:
            raise AssertionError(f"{process.name} exited with {process.returncode}")
        return answers_200(process.ready_url)

    def wait_exit(self, name: str, deadline_seconds: float = STOP_DEADLINE_SECONDS) -> int:
        process = self.processes[name]
        poll(lambda: not process.running, deadline_seconds, f"{name} exited")
        assert process.returncode is not None
        return process.returncode

    def terminate(
        self, *names: str, deadline_seconds: float = STOP_DEADLINE_SECONDS
    ) -> dict[str, int]:
        """SIGTERM to each (every process when none is named) at once; their exit codes once
        all have exited."""
        names = names or tuple(self.processes)
        for name in names:
            self.kill(name, signal.SIGTERM)
        return {name: self.wait_exit(name, deadline_seconds) for name in names}

    def restart(self, *names: str) -> dict[str, int]:
        """Stops those running (SIGTERM), starts them again on the same ports and waits until
        they are ready; returns the exit codes of the stopped ones."""
        names = names or tuple(self.processes)
        running = [name for name in names if self.processes[name].running]
        codes = self.terminate(*running) if running else {}
        self.start(*names)
        self.wait_ready(*names)
        return codes

    def revive(self) -> None:
        """Every process running and ready, whatever a test left behind: one still shutting
        down (not listening any more) is waited for, then whatever is not running starts."""
        for name, process in self.processes.items():
            poll(lambda p=process: not p.running or answers_200(p.live_url),
                 STOP_DEADLINE_SECONDS, f"{name} serving or gone")
        stopped = [name for name, process in self.processes.items() if not process.running]
        if stopped:
            self.start(*stopped)
        self.wait_ready()

    def launch(self) -> None:
        self.start()
        self.wait_ready()

    def stop_all(self) -> None:
        """SIGTERM to everything; SIGKILL to whatever is still running at the deadline."""
        for process in self.processes.values():
            process.send(signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        for process in self.processes.values():
            if process.popen is None:
                continue
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()


def _instance(component: str, n: int) -> str:
    return component if n == 1 else f"{component}-{n}"


class LaunchedSystem:
    """The async face of `Processes`: the same actions, the waits in a worker thread."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes

    @property
    def gateway_urls(self) -> list[str]:
        return self.processes.gateway_urls

    @property
    def gateway_url(self) -> str:
        return self.processes.gateway_url

    def url(self, name: str) -> str:
        return self.processes.url(name)

    def instances_of(self, component: str) -> list[str]:
        return self.processes.instances_of(component)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.processes.kill(name, sig)

    def running(self, name: str) -> bool:
        return self.processes.processes[name].running

    async def wait_exit(self, name: str, deadline_seconds: float = STOP_DEADLINE_SECONDS) -> int:
        return await asyncio.to_thread(self.processes.wait_exit, name, deadline_seconds)

    async def terminate(self, *names: str) -> dict[str, int]:
        return await asyncio.to_thread(self.processes.terminate, *names)

    async def restart(self, *names: str) -> dict[str, int]:
        return await asyncio.to_thread(self.processes.restart, *names)

    async def start(self, *names: str) -> None:
        self.processes.start(*names)
        await asyncio.to_thread(self.processes.wait_ready, *names)

    async def revive(self) -> None:
        await asyncio.to_thread(self.processes.revive)


@contextmanager
def launched_system_sync(
    databases: Mapping[str, ServiceDatabase],
    log_dir: Path | None = None,
    instances: int = 1,
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Processes]:
    """Every component running and ready; all of them stopped afterwards, whatever happened."""
    processes = Processes(databases, log_dir, instances, env_overrides)
    try:
        processes.launch()
        yield processes
    finally:
        processes.stop_all()


@asynccontextmanager
async def launched_system(
    databases: Mapping[str, ServiceDatabase],
    log_dir: Path | None = None,
    instances: int = 1,
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[LaunchedSystem]:
    """`launched_system_sync` for async tests."""
    processes = Processes(databases, log_dir, instances, env_overrides)
    try:
        await asyncio.to_thread(processes.launch)
        yield LaunchedSystem(processes)
    finally:
        await asyncio.to_thread(processes.stop_all)
