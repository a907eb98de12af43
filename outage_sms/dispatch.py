"""Running the dispatcher process: provider from the environment, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from streams.errors import ConfigurationError
from streams.genesys import GenesysClient, GenesysConfig, make_http_client
from topology.dispatcher import Dispatcher
from topology.settings import Settings

from .admin import ensure_topics
from .fastloop import run_fast

__all__ = ["genesys_config", "run_dispatcher"]

log = logging.getLogger(__name__)


def genesys_config(settings: Settings) -> GenesysConfig:
    s = settings
    if not (s.genesys_client_id and s.genesys_client_secret):
        raise ConfigurationError(
            "no provider credentials: set OUTAGE_SMS_GENESYS_CLIENT_ID and "
            "OUTAGE_SMS_GENESYS_CLIENT_SECRET (an OAuth client-credentials client with the "
            "conversation:message:create permission) and OUTAGE_SMS_GENESYS_REGION; for "
            "a local fake, run `python -m outage_sms.fake_provider` and point "
            "OUTAGE_SMS_GENESYS_API_URL and OUTAGE_SMS_GENESYS_LOGIN_URL at it"
        )
    return GenesysConfig(
        client_id=s.genesys_client_id,
        client_secret=s.genesys_client_secret,
        region=s.genesys_region,
        api_base_url=s.genesys_api_url,
        login_base_url=s.genesys_login_url or s.genesys_api_url,
    )


async def _run(settings: Settings) -> int:
    config = genesys_config(settings)
    # httpx logs every request at INFO: a formatted line per message is CPU the send path
    # cannot spare (bench/results/dispatch.md); failures are still logged by GenesysClient.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    await ensure_topics(settings)
    async with contextlib.AsyncExitStack() as stack:
        # One pool, a connection per request in flight: the lean transport does not scan
        # its pool on each request as httpcore did (streams.http11).
        http = await stack.enter_async_context(
            make_http_client(max_connections=settings.dispatch_concurrency)
        )
        dispatcher = Dispatcher(settings, GenesysClient(http, config))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await dispatcher.start()
        if settings.dispatch_metrics_port:
            await stack.enter_async_context(
                _serve_metrics(dispatcher, settings.dispatch_metrics_port)
            )
        print("dispatcher ready", flush=True)
        stopped = asyncio.ensure_future(dispatcher.wait_stopped())
        asked = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopped, asked], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if stopped.done() and stopped.exception() is not None:
            log.critical("dispatcher failed: %r", stopped.exception())
            code = 1
        asked.cancel()
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stopped
        # Bounded: a dead broker must not keep the process from exiting.
        try:
            await asyncio.wait_for(dispatcher.stop(), timeout=90)
        except TimeoutError:
            log.error("dispatcher did not stop within 90s; exiting anyway")
            code = code or 1
        log.info("dispatcher stopped: %s", dispatcher.describe())
        return code


@contextlib.asynccontextmanager
async def _serve_metrics(dispatcher: Dispatcher, port: int) -> AsyncIterator[None]:
    """``/metrics`` for Prometheus and ``/health`` (200 while the dispatcher runs)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=dispatcher.metrics(), content_type="text/plain")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "owned_partitions": sorted(dispatcher.owned)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (scraped from outside)
    log.info("dispatcher metrics on :%d/metrics", port)
    try:
        yield
    finally:
        await runner.cleanup()


def run_dispatcher(settings: Settings) -> int:
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "the dispatcher needs a broker: set KAFKA_BOOTSTRAP_SERVERS to the worker's "
            "(`outage-sms worker` prints it when it starts the embedded broker)"
        )
    return run_fast(_run(settings))
