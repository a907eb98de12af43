"""Running the Faust worker, against the embedded broker unless one is configured."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

import faust

from topology.app import create_app
from topology.settings import Settings

from .admin import ensure_topics
from .brokers import RunningBroker, start_broker
from .fastloop import use_fast_loops

__all__ = ["EXIT_SHUTDOWN_ABANDONED", "SHUTDOWN_TIMEOUT", "run_worker"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 25.0
"""Seconds a worker asked to stop (SIGTERM, SIGINT) may take before it exits anyway.

Faust's orderly stop waits for every started record to be acknowledged and commits
offsets, and both retry for as long as the broker is unreachable: a worker whose broker
died hung in its shutdown for 25 minutes, ignoring SIGTERM. Leaving at the bound is a
crash as far as the data goes, which the at-least-once design absorbs: uncommitted input
is processed again by the next owner, and command ids make the repeats harmless. 25 s
stays under the 30 s Kubernetes (and the test harness) give before SIGKILL, so a stuck
stop ends with a log line saying why rather than a bare kill."""
EXIT_SHUTDOWN_ABANDONED = 3
"""Exit code when the orderly stop did not finish within :data:`SHUTDOWN_TIMEOUT`."""


class _BoundedStop:
    """A watchdog thread, armed by the first stop signal, that ends the process if the
    orderly stop outlasts the bound (a thread: the event loop may be the thing stuck)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.timeout, self._abandon)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _abandon(self) -> None:
        log.error(
            "shutdown did not finish in %.0fs (broker unreachable?): exiting without a "
            "final commit; uncommitted input is processed again after a restart",
            self.timeout,
        )
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_SHUTDOWN_ABANDONED)


class _Worker(faust.Worker):
    """Faust's worker, with a bound on how long a signalled stop may take."""

    def __init__(self, *args: Any, bounded_stop: _BoundedStop, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bounded_stop = bounded_stop

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self._bounded_stop.arm()
        super()._schedule_shutdown(signal)


def new_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The worker's event loop, as ``settings.event_loop`` names it. uvloop's policy is
    installed for the whole process, so Faust's consumer thread runs on it too."""
    if settings.event_loop == "uvloop" and not use_fast_loops():
        log.warning("uvloop is not installed: the worker runs on asyncio's event loop")
    return asyncio.new_event_loop()


def run_worker(settings: Settings, *, create_topics: bool = True) -> int:
    embedded: RunningBroker | None = None
    if not settings.bootstrap_servers:
        embedded = start_broker("tansu")
        # Tansu is memory-only: table state kept on disk from an earlier run would not match
        # the new, empty broker (Faust then fails its offset consistency check).
        settings = settings.model_copy(
            update={
                "bootstrap_servers": embedded.bootstrap,
                "broker_kind": "tansu",
                "store": "memory://",
            }
        )
        print(f"embedded Tansu broker: KAFKA_BOOTSTRAP_SERVERS={embedded.bootstrap}", flush=True)
    # Faust and aiokafka log every produced key and value at DEBUG: keys are phone numbers.
    for name in ("faust.transport.drivers.aiokafka", "aiokafka.producer.producer"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    loop = new_loop(settings)
    asyncio.set_event_loop(loop)
    bounded_stop = _BoundedStop(SHUTDOWN_TIMEOUT)
    try:
        loop.run_until_complete(ensure_topics(settings, create=create_topics))
        built = create_app(settings)
        worker = _Worker(
            built.faust_app,
            bounded_stop=bounded_stop,
            loop=loop,
            loglevel=settings.log_level,
            redirect_stdouts=False,
            quiet=True,
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    finally:
        bounded_stop.disarm()
        if embedded is not None:
            embedded.stop()
        if not loop.is_closed():
            loop.close()
        sys.stdout.flush()
