"""Starts one component in the foreground; SIGTERM or SIGINT shuts it down gracefully.

On a signal the process stops listening and its consumers stop taking events (those being
handled finish), requests in flight get up to `shutdown_timeout_seconds` to finish (a request
still running then, such as an event stream, is cancelled), and then the cleanup contexts run
(background tasks, the outbox relay's last pass, broker, pool). The process exits 0.

It serves with the kit's `EnvelopeAppRunner`, as the tests do, so that requests the HTTP parser
refuses get the JSON envelope from the real processes too (`web.run_app` has no say in that).
"""

import asyncio
import logging
import resource
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import uvloop
from aiohttp import web

from shopkit import tracing, tuning
from shopkit.logs import configure_logging
from shopkit.server import EnvelopeAppRunner
from shopkit.settings import ComponentSettings

log = logging.getLogger("shopkit.runner")

S = TypeVar("S", bound=ComponentSettings)

# How long the cleanup (background tasks, broker, pool) may take after the requests' time
# before the process reports itself stuck.
CLEANUP_SECONDS = 5.0


def serve(
    component: str, create_app: Callable[[S], web.Application], settings: S,
    edge: bool = False,
) -> None:
    """`edge`: the component clients reach (the gateway), as tracing needs to know."""
    configure_logging(component, settings.log_level)
    allow_all_descriptors()
    # Before the app is made: its server spans come with the apps made from now on.
    traced = tracing.configure(component, edge=edge)
    log.info("starting", extra={"host": settings.host, "port": settings.port, "traced": traced})
    loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(create_app(settings), settings))
    log.info("stopped")


async def _serve(app: web.Application, settings: ComponentSettings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = EnvelopeAppRunner(app, access_log=None, **connection_options(settings))
    try:
        # A start that fails half-way still closes what it opened (cleanup contexts entered).
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        tuning.tune_garbage_collector()
        await stopping.wait()
    finally:
        overdue = loop.call_later(settings.shutdown_timeout_seconds + CLEANUP_SECONDS, _overdue)
        try:
            await runner.cleanup()
        finally:
            overdue.cancel()


def connection_options(settings: ComponentSettings) -> dict[str, Any]:
    """How a component's HTTP server treats its connections (the tests' servers too)."""
    return {
        # aiohttp closes a connection that has no whole request within this time of its start
        # or of its last response: an idle client's, or one trickling its headers.
        "keepalive_timeout": settings.client_idle_timeout_seconds,
        # After an answer to a request whose body did not all arrive (a 408, say), aiohttp
        # reads what is left for this long before it closes: no longer than a body may take.
        "lingering_time": settings.body_read_timeout_seconds,
        # A request whose client went away stops: its work (a wait for a pool connection, a
        # statement) ends with it. Behind the gateway, that client is the gateway, which goes
        # away when it gives up on an answer (504): the service then stops too.
        "handler_cancellation": True,
        # aiohttp waits this long for the requests in flight, then as long again for those
        # that outlive the first wait (streams) before cancelling them: half of ours each, so
        # the process is done within shutdown_timeout_seconds.
        "shutdown_timeout": settings.shutdown_timeout_seconds / 2,
    }


def allow_all_descriptors() -> None:
    """Every connection and stream is a file descriptor, and the soft limit a process starts
    with (often 1024) is far below what the system allows it (the hard limit): the caps on
    streams and connections are the components' own (settings), not an accident of the shell."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _overdue() -> None:
    """A shutdown that hangs ends in SIGKILL from whoever waits for it: say where it hangs."""
    tasks = asyncio.all_tasks()
    stuck = {task.get_name(): " > ".join(_awaiting(task.get_coro())) for task in tasks}
    log.error("shutdown overdue", extra={"tasks": stuck})


def _awaiting(coro: object) -> list[str]:
    """Where a coroutine waits, outermost first (a task's own stack shows only its top frame)."""
    where = []
    while (frame := getattr(coro, "cr_frame", None)) is not None:
        where.append(f"{frame.f_code.co_qualname} line {frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return where

