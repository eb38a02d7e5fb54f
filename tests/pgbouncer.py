"""A PgBouncer in transaction pooling mode in front of the test database, started by the test
run itself (Debian's pgbouncer, on a port of its own) for the pass of the integration suite
that goes through it (`make test`, SHOP_TEST_PGBOUNCER=1)."""

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# What shopkit.db sends at connect that PgBouncer does not pass on: it must let them by, and
# the roles' own settings (made by the bootstrap) take their place.
IGNORED_STARTUP_PARAMETERS = "search_path,plan_cache_mode,random_page_cost"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def through(dsn: str, port: int) -> str:
    """The same user, password and database, reached through the PgBouncer on `port`."""
    parts = urlsplit(dsn)
    login = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{login}@127.0.0.1:{port}"))


def _config(directory: Path, port: int, upstream: str) -> str:
    server = urlsplit(upstream)
    return f"""
[databases]
* = host={server.hostname or "127.0.0.1"} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory}/users.txt
pool_mode = transaction
ignore_startup_parameters = {IGNORED_STARTUP_PARAMETERS}
max_client_conn = 2000
default_pool_size = 40
; A Postgres that went away is tried again within a second of coming back, and a client
; waiting for a server connection meanwhile gives up rather than hangs.
server_login_retry = 1
query_wait_timeout = 10
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


@asynccontextmanager
async def running_pgbouncer(upstream: str, users: Mapping[str, str]) -> AsyncIterator[int]:
    """A PgBouncer in front of the Postgres of `upstream` (a DSN), letting in `users` (name:
    password); yields its port. As root it runs as the postgres user (it will not run as root)."""
    port = _free_port()
    directory, command = _prepare(port, upstream, users)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _listening(port, process, directory)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _prepare(port: int, upstream: str, users: Mapping[str, str]) -> tuple[Path, list[str]]:
    """The configuration in a directory of its own, and the command that runs it."""
    if not Path(PGBOUNCER).exists():
        raise RuntimeError("pgbouncer is missing: scripts/ensure-cluster-tools installs it")
    directory = Path(tempfile.mkdtemp(prefix="shop-pgbouncer-"))
    (directory / "users.txt").write_text(
        "".join(f'"{name}" "{password}"\n' for name, password in users.items())
    )
    (directory / "pgbouncer.ini").write_text(_config(directory, port, upstream))
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (directory, *directory.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    return directory, command


async def _listening(port: int, process: asyncio.subprocess.Process, directory: Path) -> None:
    async with asyncio.timeout(15):
        while True:
            if process.returncode is not None:
                log = (directory / "pgbouncer.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pgbouncer exited: {log}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)
