"""`python -m demo` (`make demo`): runs the components as `make run` does
(`scripts/run-components Procfile`), waits for the gateway, makes the demo admin, seeds the
shop through its API, prints where it is and who to sign in as, and keeps the system in the
foreground. Ctrl-C (or SIGTERM, SIGHUP) stops everything; a seeding that fails stops it too,
exiting 1.
"""

import asyncio
import os
import signal
import sys
import traceback
from pathlib import Path

from demo.catalogue import PRODUCTS
from demo.seed import (
    Account,
    DemoError,
    Seeded,
    auth_environment,
    demo_accounts,
    ensure_admin,
    seed,
    wait_for_gateway,
)

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_HOST = "127.0.0.1"
GATEWAY_PORT = int(os.environ.get("GATEWAY_PORT", "8080"))  # as the Procfile reads it
GATEWAY_URL = f"http://{GATEWAY_HOST}:{GATEWAY_PORT}"


class Components:
    """scripts/run-components in a session of its own: Ctrl-C at the terminal reaches only us,
    and we pass one signal on, so it stops every component once, as under `make run`."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.signalled: int | None = None
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "run-components"), str(ROOT / "Procfile"),
            cwd=ROOT, start_new_session=True,
        )

    def stop(self, signum: int) -> None:
        # Only the first: `timeout` and make each send their own SIGTERM, and run-components
        # takes a second signal while it stops the components for a fatal one.
        if self.signalled is None:
            self.signalled = signum
            self.stopping.set()
            if self.process is not None and self.process.returncode is None:
                # A closed terminal's SIGHUP does not reach its session: it stops as for TERM.
                self.process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    async def exit_status(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        return 128 - code if code < 0 else code  # killed by a signal: as a shell reports it


async def run_demo() -> int:
    try:
        admin, shopper = demo_accounts()
        auth_env = auth_environment(os.environ)
        await _gateway_port_free()
    except DemoError as exc:
        return _say(f"cannot start the demo: {exc}")
    components = Components()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, components.stop, signum)
    await components.start()
    print(f"demo: starting the shop, then seeding it through {GATEWAY_URL} ...",
          file=sys.stderr, flush=True)
    exited = asyncio.ensure_future(components.exit_status())
    seeding = asyncio.ensure_future(_prepare(admin, shopper, auth_env))
    stopping = asyncio.ensure_future(components.stopping.wait())
    await asyncio.wait({exited, seeding, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    return await _after_seeding(components, seeding, exited, admin, shopper)


async def _after_seeding(
    components: Components, seeding: asyncio.Future[Seeded], exited: asyncio.Future[int],
    admin: Account, shopper: Account,
) -> int:
    if components.signalled or not seeding.done():
        seeding.cancel()
        if not components.signalled:
            _say("a component exited before the shop was ready (its lines above say why)")
            return await exited or 1
        return await exited
    if (problem := seeding.exception()) is not None:
        if not isinstance(problem, DemoError):
            traceback.print_exception(problem)
        _say(f"seeding the shop failed, stopping it: {problem}")
        components.stop(signal.SIGTERM)
        await exited
        return 1
    print(banner(seeding.result(), admin, shopper), flush=True)
    return await exited


async def _prepare(admin: Account, shopper: Account, auth_env: dict[str, str]) -> Seeded:
    await wait_for_gateway(GATEWAY_URL)
    await ensure_admin(GATEWAY_URL, admin, auth_env)
    return await seed(GATEWAY_URL, admin, shopper)


async def _gateway_port_free() -> None:
    """The demo runs a system of its own: a gateway already listening (a `make run`?) would
    answer for it."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(GATEWAY_HOST, GATEWAY_PORT), timeout=2
        )
    except (OSError, TimeoutError):
        return
    writer.close()
    raise DemoError(f"{GATEWAY_HOST}:{GATEWAY_PORT} is in use already (a `make run`?): "
                    "stop it first, the demo starts the shop itself")


def _say(message: str) -> int:
    print(f"demo: {message}", file=sys.stderr, flush=True)
    return 1


def banner(seeded: Seeded, admin: Account, shopper: Account) -> str:
    width = max(len(admin.email), len(shopper.email))
    rule = "=" * 78
    return "\n".join([
        "", rule,
        f"Demo shop: {GATEWAY_URL}/",
        f"  shopper  {shopper.email:<{width}}  {shopper.password}",
        f"  admin    {admin.email:<{width}}  {admin.password}   (sign in through the admin login)",
        f"  {len(PRODUCTS)} demo products ({seeded.products_added} added now); the shopper's "
        f"order {seeded.order_id} is {seeded.order_status}.",
        "Ctrl-C stops the shop.",
        rule, "",
    ])


def main() -> int:
    return asyncio.run(run_demo())


if __name__ == "__main__":
    sys.exit(main())
