"""``outage-sms``: the one entry point. Every command has ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

if TYPE_CHECKING:
    from topology.settings import Settings

__all__ = ["main"]

log = logging.getLogger("outage_sms")


def _settings() -> Settings:
    from topology.settings import Settings

    return Settings()


def cmd_broker(args: argparse.Namespace) -> int:
    from .brokers import ensure_kafka_jars, start_broker

    if args.prepare:
        path = ensure_kafka_jars(progress=lambda m: print(m, file=sys.stderr, flush=True))
        print(path)
        return 0
    print(f"starting {args.kind} broker ...", file=sys.stderr, flush=True)
    broker = start_broker(
        args.kind, port=args.port, progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    try:
        if args.create_topics:
            from .admin import ensure_topics

            settings = _settings().model_copy(
                update={
                    "bootstrap_servers": broker.bootstrap,
                    "broker_kind": "tansu" if args.kind == "tansu" else "kafka",
                }
            )
            report = asyncio.run(ensure_topics(settings))
            print(f"created {len(report.created)} topics", file=sys.stderr, flush=True)
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}", flush=True)
        print("broker running; Ctrl-C stops it", file=sys.stderr, flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                if broker.process is not None and broker.process.poll() is not None:
                    code = broker.process.returncode
                    print(f"broker exited ({code})\n{broker.log_tails()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        broker.stop()


def cmd_topics_create(args: argparse.Namespace) -> int:
    from .admin import ensure_topics

    settings = _settings()
    report = asyncio.run(ensure_topics(settings, create=not args.check))
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    return 0


def cmd_topics_list(args: argparse.Namespace) -> int:
    from topology.topics import TopicRegistry

    settings = _settings()
    print(f"{'topic':48} {'key':12} {'parts':>5}  policy")
    for spec in TopicRegistry(settings):
        policy = (
            "compact"
            if spec.compacted
            else f"delete {spec.retention_ms // 86_400_000}d"
            if spec.retention_ms
            else "delete"
        )
        print(f"{spec.name:48} {spec.key:12} {spec.partitions:>5}  {policy}")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    import schemas

    directory = Path(args.dir) if args.dir else schemas.JSON_DIR
    rendered = schemas.render_json_schemas()
    if args.check:
        stale = [
            n
            for n, text in rendered.items()
            if not (directory / n).is_file() or (directory / n).read_text() != text
        ]
        if stale:
            print(f"out of date: {', '.join(stale)}; run `outage-sms schemas export`")
            return 1
        print(f"{len(rendered)} JSON Schema files are up to date in {directory}")
        return 0
    for path in schemas.export_json_schemas(directory):
        print(path)
    return 0


def _checked_settings(role: Literal["worker", "dispatcher"]) -> Settings:
    """Settings checked before any connection: every fix named at once, warnings logged."""
    from .preflight import check_settings

    settings = _settings()
    for warning in check_settings(settings, role):
        log.warning("configuration: %s", warning)
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _checked_settings("worker")
    from .worker import run_worker

    return run_worker(settings, create_topics=not args.no_create_topics)


def cmd_dispatcher(args: argparse.Namespace) -> int:
    settings = _checked_settings("dispatcher")
    from .dispatch import run_dispatcher

    return run_dispatcher(settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, DemoError, run_demo

    if not args.verbose:  # the demo's own lines are the output; libraries' INFO is noise
        logging.getLogger().setLevel(logging.WARNING)
    config = DemoConfig(
        customers=args.customers,
        rate=args.rate,
        stage_timeout=args.stage_timeout,
        json_path=args.json,
        keep_logs=args.keep_logs,
    )
    try:
        return run_demo(config)
    except DemoError as exc:
        print(f"error: demo failed: {exc}", file=sys.stderr)
        return 1


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import run_plan

    return run_plan(_settings(), args)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import run_report

    return run_report(_settings(), args)


def cmd_audit_replay(args: argparse.Namespace) -> int:
    from streams.replay import parse_time

    from .admin import ConfigurationError
    from .replay import OffsetRange, ReplayRequest, replay_main

    try:
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
    except ValueError as exc:
        raise ConfigurationError(f"--from/--to: {exc}") from None
    if (start or end) and args.offsets:
        raise ConfigurationError("give either --from/--to or --offsets, not both")
    request = ReplayRequest(
        start=start,
        end=end,
        offsets=tuple(OffsetRange.parse(o) for o in args.offsets or ()),
        outage_id=args.outage,
        examples=args.examples,
    )
    return replay_main(_settings(), request, args.json, args.csv)


def _add_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "audit",
        help="check sms.audit against the input topics",
        description="Auditing tools; they read topics and never write to them.",
    )
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ar = asub.add_parser(
        "replay",
        help="re-derive every decision from the input topics and compare with sms.audit",
        description="Re-read customer.regions, outage.events and sms.inbound (no consumer "
        "group, nothing committed, nothing sent or written), re-derive every decision with "
        "the worker's own rules (the same OUTAGE_SMS_* settings) and compare with sms.audit "
        "by audit_id. Exit 0: reproduced; 1: any divergence; 2: configuration error.",
    )
    ar.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="first record timestamp in scope, ISO-8601 with zone (Apache Kafka only)",
    )
    ar.add_argument(
        "--to", dest="end", metavar="TIME", help="end of the scope (exclusive), ISO-8601 with zone"
    )
    ar.add_argument(
        "--offsets",
        action="append",
        metavar="TOPIC:PARTITION:START-END",
        help="an offset range in scope (END exclusive, optional); repeatable",
    )
    ar.add_argument("--outage", metavar="ID", help="only the decisions about this outage")
    ar.add_argument("--json", type=Path, metavar="PATH", help="write the full report as JSON")
    ar.add_argument("--csv", type=Path, metavar="PATH", help="write one row per difference")
    ar.add_argument("--examples", type=int, default=10, help="examples printed per kind")
    ar.set_defaults(func=cmd_audit_replay)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="outage-sms",
        description="Texts customers the moment an outage is detected. Configuration comes "
        "from environment variables (OUTAGE_SMS_*, KAFKA_BOOTSTRAP_SERVERS); see README.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    w = sub.add_parser(
        "worker",
        help="run the stream processor",
        description="Run the worker. Without KAFKA_BOOTSTRAP_SERVERS it starts "
        "the embedded Tansu broker first and creates the topics.",
    )
    w.add_argument(
        "--no-create-topics", action="store_true", help="fail instead of creating missing topics"
    )
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser(
        "dispatcher",
        help="send the queued commands through the SMS provider",
        description="Send commands from sms.send-commands through Genesys Cloud, each "
        "sender number at its rate, and publish every outcome to sms.delivery-status. "
        "Needs KAFKA_BOOTSTRAP_SERVERS and OUTAGE_SMS_GENESYS_CLIENT_ID/_SECRET/_REGION. "
        "Run as many as you like: each sender number has exactly one owner.",
    )
    d.set_defaults(func=cmd_dispatcher)

    b = sub.add_parser(
        "broker",
        help="start a real Kafka-compatible broker",
        description="Start a broker and print its bootstrap address; runs until "
        "Ctrl-C. tansu: embedded, memory-only, no transactions. kafka: Apache "
        "Kafka (KRaft) from Maven Central jars, needs Java 17+. container: "
        "testcontainers, needs a Docker engine.",
    )
    b.add_argument("--kind", choices=["tansu", "kafka", "container"], default="tansu")
    b.add_argument("--port", type=int, default=None, help="listener port (default: a free one)")
    b.add_argument("--create-topics", action="store_true", help="create the app's topics")
    b.add_argument(
        "--prepare", action="store_true", help="only fetch and cache Apache Kafka's jars, then exit"
    )
    b.set_defaults(func=cmd_broker)

    t = sub.add_parser(
        "topics",
        help="create or list the app's topics",
        description="Topics of the registry, with partitions and cleanup policy.",
    )
    tsub = t.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    tc = tsub.add_parser(
        "create",
        help="create missing topics, check partition counts",
        description="Create every missing topic with the right partitions "
        "and cleanup policy; fail on a partition-count mismatch.",
    )
    tc.add_argument("--check", action="store_true", help="only check, create nothing")
    tc.set_defaults(func=cmd_topics_create)
    tl = tsub.add_parser(
        "list",
        help="print the topic registry (no broker needed)",
        description="Print every topic the app uses, resolved from the env.",
    )
    tl.set_defaults(func=cmd_topics_list)

    s = sub.add_parser(
        "schemas",
        help="JSON Schema of every topic",
        description="JSON Schema files for teams that do not use Python.",
    )
    ssub = s.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    se = ssub.add_parser(
        "export",
        help="write JSON Schema files",
        description="Write one JSON Schema file per topic model.",
    )
    se.add_argument("--dir", help="target directory (default: schemas/json in the package)")
    se.add_argument("--check", action="store_true", help="exit 1 if the files are out of date")
    se.set_defaults(func=cmd_schemas_export)
    _add_audit(sub)
    _add_operator_commands(sub)
    return p


def _add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``demo``, ``plan`` and ``report``: seeing the system work, sizing, accounting."""
    de = sub.add_parser(
        "demo",
        help="run the whole system on sample data, with live progress and a summary",
        description="Start an embedded Tansu broker, the worker, the fake Genesys provider "
        "and the dispatcher; load sample customers; publish an outage (detected, updated, "
        "resolved) while customers text STOP and STATUS; print live progress, a summary of "
        "what was sent and suppressed and why, and texts as customers saw them. Needs only "
        "Python; exits 0 when every check holds. Quiet hours are switched off for the demo.",
    )
    de.add_argument("--customers", type=int, default=300, help="sample customers (default 300)")
    de.add_argument(
        "--rate", type=float, default=200.0, help="the short code's rate, msg/s (default 200)"
    )
    de.add_argument(
        "--stage-timeout",
        type=float,
        default=60.0,
        help="fail when a stage takes longer than this many seconds (default 60)",
    )
    de.add_argument("--json", type=Path, help="also write the summary as JSON to this file")
    de.add_argument(
        "--keep-logs", action="store_true", help="keep the worker's log in the temporary directory"
    )
    de.set_defaults(func=cmd_demo)

    from .plan import add_arguments as plan_arguments
    from .report import add_arguments as report_arguments

    pl = sub.add_parser(
        "plan",
        help="how long notifying a region takes with the sender pool, and what more senders buy",
        description="Project how long texting N recipients (--recipients) or a region's "
        "consenting customers (--region, counted from customer.regions on the configured "
        "broker) takes with the sender pool (OUTAGE_SMS_SENDERS or --senders), per sender "
        "and sender type, and what adding senders would change. Each number sticks to one "
        "sender, so recipients split evenly across the senders of their country: the "
        "slowest sender sets the pace.",
    )
    plan_arguments(pl)
    pl.set_defaults(func=cmd_plan)

    rp = sub.add_parser(
        "report",
        help="the funnel and timeline of one outage, from sms.audit and sms.delivery-status",
        description="Read sms.audit and sms.delivery-status on the configured broker and "
        "print one outage's funnel (targeted, suppressed by reason, sent, delivered, "
        "failed, pending) per version and its timeline. Reads without a consumer group; "
        "changes nothing.",
    )
    report_arguments(rp)
    rp.set_defaults(func=cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .admin import ConfigurationError
    from .brokers import BrokerError

    try:
        return int(args.func(args))
    except (ConfigurationError, BrokerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{_explain_settings(exc)}", file=sys.stderr)
        return 2


def _explain_settings(exc: ValidationError) -> str:
    """Name the environment variable to fix, not pydantic's field path."""
    lines = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if field == "bootstrap_servers"
            else (f"OUTAGE_SMS_{field.upper()}")
        )
        lines.append(f"  {var}={err.get('input')!r}: {err['msg']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
