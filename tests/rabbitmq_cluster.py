"""A real RabbitMQ cluster on this machine, for the tests that lose one of its nodes.

Each node is Debian's rabbitmq-server run as a process of the test, with a node name, ports,
data directory and Erlang cookie of its own, beside (and untouched by) the machine's own
broker. The first node starts alone; the others join it as they boot (classic peer
discovery). Every node is stopped when the block ends, however it ends.
"""

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Node:
    name: str
    amqp_port: int
    management_port: int
    directory: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass
class RabbitMQCluster:
    base: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """HOME of the nodes and of rabbitmqctl: where the cluster's Erlang cookie is."""
        return self.base / "home"

    def url(self, user: str, password: str, vhost: str = "/", first: Node | None = None) -> str:
        """An AMQP URL naming every node, as a component is given it; `first` first."""
        nodes = sorted(self.nodes, key=lambda node: node is not first)
        hosts = ",".join(f"127.0.0.1:{node.amqp_port}" for node in nodes)
        return f"amqp://{quote(user)}:{quote(password)}@{hosts}/{quote(vhost, safe='')}"

    def management_url(self, node: Node, user: str = "guest", password: str = "guest") -> str:
        return f"http://{user}:{password}@127.0.0.1:{node.management_port}"

    async def ctl(self, node: Node, *args: str, seconds: float = 60) -> str:
        process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node.name, *args,
            env={**os.environ, "HOME": str(self.home)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(seconds):
            output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {output.decode()}")
        return output.decode()

    async def leader_of(self, queue: str, vhost: str = "/") -> Node:
        """The node that leads a quorum queue now, asked of a running node."""
        asking = next(node for node in self.nodes if node.running)
        url = (f"http://127.0.0.1:{asking.management_port}/api/queues/"
               f"{quote(vhost, safe='')}/{quote(queue, safe='')}")
        login = {"Authorization": aiohttp.encode_basic_auth("guest", "guest")}
        async with aiohttp.ClientSession(headers=login) as http, http.get(url) as response:
            assert response.status == 200, await response.text()
            leader = (await response.json())["leader"]
        return next(node for node in self.nodes if node.name == leader)

    async def stop(self, node: Node) -> None:
        """Stops the node as an operator would, and waits until its process is gone."""
        with contextlib.suppress(Exception):
            await self.ctl(node, "stop", seconds=60)
        await self._gone(node)

    async def _gone(self, node: Node) -> None:
        if node.process is None:
            return
        try:
            async with asyncio.timeout(30):
                await node.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            await node.process.wait()

    async def start(self, node: Node, join: Node | None) -> None:
        node.directory.mkdir(parents=True)
        (node.directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
        discovery = "" if join is None else (
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"cluster_formation.classic_config.nodes.1 = {join.name}\n"
        )
        (node.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {node.management_port}\n"
            "loopback_users = none\n" + discovery
        )
        (node.directory / "env.conf").write_text("")
        env = {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(node.directory / "env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_CONFIG_FILE": str(node.directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.directory / "log"),
            "RABBITMQ_PID_FILE": str(node.directory / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        log = (node.directory / "out.log").open("wb")  # the child writes it; closed below
        try:
            node.process = await asyncio.create_subprocess_exec(
                str(RABBITMQ_BIN / "rabbitmq-server"), env=env, stdout=log,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()

    async def await_startup(self, node: Node) -> None:
        try:
            # `wait` waits for the node's pid file and then for the node to have booted
            # (await_startup gives up on a node not yet known to epmd).
            await self.ctl(node, "wait", str(node.directory / "pid"), "--timeout",
                           str(START_SECONDS), seconds=START_SECONDS + 10)
        except (RuntimeError, TimeoutError) as exc:
            log = (node.directory / "out.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{node.name} did not start: {exc}\n{log}") from exc

    def logs(self) -> str:
        shown = []
        for node in self.nodes:
            log = node.directory / "out.log"
            if log.exists():
                shown.append(f"----- {node.name}\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(shown)


@asynccontextmanager
async def rabbitmq_cluster(base: Path, size: int = 3) -> AsyncIterator[RabbitMQCluster]:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise RuntimeError("rabbitmq-server is missing: scripts/ensure-infra installs it")
    cluster = RabbitMQCluster(base)
    cluster.home.mkdir(parents=True)
    cookie = cluster.home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20).upper())
    cookie.chmod(0o400)
    run = secrets.token_hex(3)
    cluster.nodes = [
        Node(f"shoptest{run}{letter}@localhost", _free_port(), _free_port(), base / letter)
        for letter in "abcdefg"[:size]
    ]
    try:
        first, *others = cluster.nodes
        await cluster.start(first, join=None)
        await cluster.await_startup(first)
        for node in others:
            await cluster.start(node, join=first)
        for node in others:
            await cluster.await_startup(node)
        status = json.loads(await cluster.ctl(first, "cluster_status", "--formatter", "json"))
        assert set(status["running_nodes"]) == {node.name for node in cluster.nodes}, status
        yield cluster
    finally:
        await asyncio.gather(*(cluster.stop(node) for node in cluster.nodes if node.running),
                             return_exceptions=True)
