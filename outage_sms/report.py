"""``outage-sms report --outage ID``: one outage's funnel and timeline, read from the topics.

Reads ``sms.audit`` and ``sms.delivery-status`` from the beginning up to their end offsets
as of the start, without a consumer group (nothing is committed, nothing changes), and
folds them with :mod:`streams.report`. A record is decoded only when its bytes mention the
outage id: most of a busy audit topic is about other outages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from outage_sms.admin import end_offsets
from streams.errors import ConfigurationError
from streams.report import OutageReport, render_funnel
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

__all__ = ["add_arguments", "read_topics", "run_report"]

#: (topic, key, value) of one record, called for every record read.
OnRecord = Callable[[str, bytes | None, bytes | None], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outage", required=True, metavar="ID", help="the outage id")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up when reading takes longer than this many seconds (default 300)",
    )


def _unreachable(bootstrap: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot reach the Kafka broker at {bootstrap}: check KAFKA_BOOTSTRAP_SERVERS (the "
        "worker prints it when it starts the embedded broker) and OUTAGE_SMS_TOPIC_PREFIX"
    )


async def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    on_record: OnRecord,
    *,
    progress: Callable[[str], None] | None = None,
    timeout: float = 300.0,
    every: float = 1.0,
) -> int:
    """Read ``topics`` from the start to their end offsets as of now; the records read.

    ``progress`` gets a line about once a second while reading takes longer than that.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        await consumer.start()
    except KafkaConnectionError:
        await consumer.stop()
        raise _unreachable(bootstrap) from None
    try:
        tps: list[TopicPartition] = []
        missing = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = consumer.partitions_for_topic(topic)
            if not parts:
                missing.append(topic)
            tps += [TopicPartition(topic, p) for p in sorted(parts or ())]
        if missing:
            raise ConfigurationError(
                f"no topic {', '.join(missing)} on {bootstrap}: check OUTAGE_SMS_TOPIC_PREFIX "
                "and the topic names (`outage-sms topics list`), or create them with "
                "`outage-sms topics create`"
            )
        consumer.assign(tps)
        ends = await end_offsets(consumer, tps)
        todo = {tp: end for tp, end in ends.items() if end > 0}
        total = sum(todo.values())
        consumer.assign(list(todo))
        if todo:
            await consumer.seek_to_beginning(*todo)
        read = 0
        started = time.monotonic()
        next_line = started + every
        while todo:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, msgs in batch.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for m in msgs:
                    if m.offset >= end:
                        break
                    on_record(tp.topic, m.key, m.value)
                    read += 1
                if msgs and msgs[-1].offset + 1 >= end:
                    todo.pop(tp)
            for tp in [tp for tp in todo if await consumer.position(tp) >= todo[tp]]:
                todo.pop(tp)  # ends at a transaction marker or a compacted gap
            now = time.monotonic()
            if now - started > timeout:
                raise ConfigurationError(
                    f"reading {', '.join(topics)} took more than {timeout:.0f}s "
                    f"({read:,} of about {total:,} records); raise --timeout"
                )
            if progress is not None and now >= next_line:
                progress(
                    f"read {read:,} of about {total:,} records ({read / (now - started):,.0f}/s)"
                )
                next_line = now + every
        return read
    except KafkaError as exc:
        raise ConfigurationError(f"reading from {bootstrap} failed: {exc!r}") from None
    finally:
        await consumer.stop()


async def build_report(
    settings: Settings,
    outage_id: str,
    progress: Callable[[str], None] | None = None,
    timeout: float = 300.0,
) -> tuple[OutageReport, int]:
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "no broker: set KAFKA_BOOTSTRAP_SERVERS to the cluster the worker and the "
            "dispatcher use"
        )
    reg = TopicRegistry(settings)
    audit, status = reg[Role.AUDIT].name, reg[Role.DELIVERY_STATUS].name
    report = OutageReport(outage_id)
    needle = outage_id.encode()
    receipts: list[dict[str, Any]] = []

    def on_record(topic: str, _key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        if topic == audit:
            if needle in value:
                report.add_audit(orjson.loads(value))
        elif needle in value:
            report.add_status(orjson.loads(value))
        elif b'"delivered"' in value or b'"undelivered"' in value:
            # A receipt linked by command id only; decided once every command is known.
            receipts.append(orjson.loads(value))

    # Audit first: the fan-out's records name the commands that statuses then refer to.
    read = await read_topics(
        settings.bootstrap_servers, [audit], on_record, progress=progress, timeout=timeout
    )
    read += await read_topics(
        settings.bootstrap_servers, [status], on_record, progress=progress, timeout=timeout
    )
    for r in receipts:
        report.add_status(r)
    return report, read


def run_report(settings: Settings, args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report, read = asyncio.run(build_report(settings, args.outage, progress, args.timeout))
    funnel = report.funnel()
    if not funnel.found:
        print(
            f"error: no record of outage {args.outage!r} in {read:,} records of sms.audit and "
            "sms.delivery-status: check the id (it is the outage event's outage_id) and "
            "KAFKA_BOOTSTRAP_SERVERS / OUTAGE_SMS_TOPIC_PREFIX",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(orjson.dumps(funnel.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print("\n".join(render_funnel(funnel)))
    return 0
