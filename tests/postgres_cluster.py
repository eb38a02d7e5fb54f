"""A Postgres primary with a synchronous streaming standby on this machine, for the tests that
fail over: two clusters of Debian's Postgres made for the test (pg_createcluster, the standby
cloned with pg_basebackup), beside (and untouched by) the machine's own cluster, and dropped
when the block ends, however it ends."""

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import asyncpg

VERSION = "15"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _run(*command: str, seconds: float = 120) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(seconds):
        output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {output.decode()}")
    return output.decode()


@dataclass(frozen=True)
class PgCluster:
    name: str
    port: int

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_directory(self) -> str:
        return f"/var/lib/postgresql/{VERSION}/{self.name}"

    async def ctl(self, action: str, *options: str) -> None:
        await _run("pg_ctlcluster", "--skip-systemctl-redirect", VERSION, self.name, action,
                   *options)


@dataclass(frozen=True)
class PrimaryAndStandby:
    primary: PgCluster
    standby: PgCluster

    def dsn(self, login: str, database: str) -> str:
        """Both hosts, as a service is given them (`login`: user or user:password): whichever
        takes writes now."""
        return (f"postgresql://{login}@127.0.0.1:{self.primary.port},"
                f"127.0.0.1:{self.standby.port}/{database}?target_session_attrs=read-write")

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres", "postgres")

    async def fail_over(self) -> None:
        """What an operator (or an operator's tool) does: the standby becomes the primary,
        and the old primary stops."""
        await self.standby.ctl("promote")
        await self.primary.ctl("stop", "-m", "fast")


async def _create(name: str, port: int) -> PgCluster:
    await _run(
        "pg_createcluster", VERSION, name, "--port", str(port),
        "-o", f"synchronous_standby_names={name}s",
        "--", "--auth=trust",
    )
    return PgCluster(name, port)


async def _replicating_synchronously(primary: PgCluster, standby: PgCluster) -> None:
    conn = await asyncpg.connect(primary.admin_dsn)
    try:
        async with asyncio.timeout(60):
            while True:
                state = await conn.fetchval(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    standby.name,
                )
                if state == "sync":
                    return
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


@asynccontextmanager
async def primary_and_standby() -> AsyncIterator[PrimaryAndStandby]:
    if os.geteuid() != 0:
        raise RuntimeError("making Postgres clusters takes root (pg_createcluster)")
    name = f"shoptest{secrets.token_hex(3)}"
    made: list[PgCluster] = []
    try:
        # The primary waits for the standby (named after it, with an "s") at each commit.
        primary = await _create(name, _free_port())
        made.append(primary)
        await primary.ctl("start")
        standby = PgCluster(f"{name}s", _free_port())
        await _run("pg_createcluster", VERSION, standby.name, "--port", str(standby.port),
                   "--", "--auth=trust")
        made.append(standby)
        await _run("find", standby.data_directory, "-mindepth", "1", "-delete")
        await _run(
            "runuser", "-u", "postgres", "--", "pg_basebackup", "-D", standby.data_directory,
            "-R", "-X", "stream", "-d",
            f"host=127.0.0.1 port={primary.port} user=postgres "
            f"application_name={standby.name}",
        )
        await standby.ctl("start")
        await _replicating_synchronously(primary, standby)
        yield PrimaryAndStandby(primary, standby)
    finally:
        for cluster in reversed(made):
            with suppress(Exception):
                await _run("pg_dropcluster", "--stop", VERSION, cluster.name)
