"""Running the Faust worker, against the embedded broker unless one is configured."""

from __future__ import annotations

import asyncio
import logging
import sys

import faust

from topology.app import create_app
from topology.settings import Settings

from .admin import ensure_topics
from .brokers import RunningBroker, start_broker

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


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
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_topics(settings, create=create_topics))
        built = create_app(settings)
        worker = faust.Worker(
            built.faust_app,
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
        if embedded is not None:
            embedded.stop()
        if not loop.is_closed():
            loop.close()
        sys.stdout.flush()
