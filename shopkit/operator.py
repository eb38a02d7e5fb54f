"""The operator's listener: `GET /metrics` for Prometheus, on the component's own metrics port.

It is a second, tiny HTTP server beside the component's API, started and stopped with its app.
Clients reach the API's port only (the gateway's, from outside), so nothing a client calls can
read the metrics, and scrapes never queue behind client traffic on the API's listener.
"""

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shopkit.metrics import METRICS_PATH, REFRESH_KEY, Refresh, add_refreshers
from shopkit.settings import ComponentSettings
from shopkit.web import conceal_software

# Where the listener answers, once started (with port 0 in settings, the port the OS chose).
METRICS_URL_KEY = web.AppKey("metrics_url", str)


def serve_metrics(
    app: web.Application, settings: ComponentSettings, *refreshers: Refresh
) -> None:
    """Serves the process's metrics on `settings.metrics_host:metrics_port` for `app`'s
    lifetime; each refresher updates its gauges from `app` before a scrape."""
    add_refreshers(app, *refreshers)
    app[METRICS_URL_KEY] = ""
    app.cleanup_ctx.append(_listener(settings.metrics_host, settings.metrics_port))


def _listener(host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scraper = web.Application()
        scraper.on_response_prepare.append(conceal_software)
        scraper.router.add_get(METRICS_PATH, _scrape_handler(app))
        runner = web.AppRunner(scraper, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            app[METRICS_URL_KEY] = f"http://{bound_host}:{bound_port}"
            yield
        finally:
            await runner.cleanup()

    return ctx


def _scrape_handler(app: web.Application) -> Callable[[web.Request], object]:
    async def scrape(request: web.Request) -> web.Response:
        for refresh in app[REFRESH_KEY]:
            await refresh(app)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return scrape
