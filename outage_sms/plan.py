"""``outage-sms plan``: how long a region's notification takes with the sender pool.

The arithmetic is in :mod:`streams.planning`; this module gathers its inputs (a count,
or a region's customers read from ``customer.regions``) and prints the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from streams.errors import ConfigurationError
from streams.planning import (
    RegionCount,
    count_region,
    format_duration,
    plan_notification,
    suggestions,
)
from streams.senders import parse_pool
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

from .report import read_topics

__all__ = ["add_arguments", "run_plan"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipients", type=int, metavar="N", help="recipients to text")
    what.add_argument(
        "--region",
        metavar="R",
        help="count the region's consenting, textable numbers from customer.regions on "
        "KAFKA_BOOTSTRAP_SERVERS",
    )
    p.add_argument(
        "--country",
        default="US",
        help="country of the --recipients (ISO code, default US); --region uses each number's",
    )
    p.add_argument(
        "--senders",
        metavar="JSON",
        help="sender pool as in OUTAGE_SMS_SENDERS (default: that variable, or its default)",
    )
    p.add_argument("--segments", type=int, default=1, help="segments per text (default 1)")
    p.add_argument(
        "--dispatchers",
        type=int,
        default=1,
        help="dispatchers, each with its own OAuth client (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


async def _count(settings: Settings, region: str) -> RegionCount:
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "--region reads customer.regions from the broker: set KAFKA_BOOTSTRAP_SERVERS, "
            "or give --recipients N instead"
        )
    topic = TopicRegistry(settings)[Role.CUSTOMER_REGIONS].name
    records: list[tuple[Any, Any]] = []

    def on_record(_topic: str, key: bytes | None, value: bytes | None) -> None:
        records.append((key, orjson.loads(value) if value is not None else None))

    await read_topics(
        settings.bootstrap_servers,
        [topic],
        on_record,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return count_region(records, region)


def run_plan(settings: Settings, args: argparse.Namespace) -> int:
    if args.segments < 1 or args.dispatchers < 1:
        raise ConfigurationError("--segments and --dispatchers must be at least 1")
    pool = parse_pool(args.senders or settings.senders)
    region: RegionCount | None = None
    if args.region is not None:
        region = asyncio.run(_count(settings, args.region))
        recipients = dict(region.recipients)
        if not region.customers:
            raise ConfigurationError(
                f"no customer in region {args.region!r} on customer.regions: check the "
                "region name (as in the customer records) and OUTAGE_SMS_TOPIC_PREFIX"
            )
    else:
        if args.recipients < 0:
            raise ConfigurationError("--recipients must be 0 or more")
        recipients = {args.country.upper(): args.recipients}
    kw: dict[str, Any] = {
        "segments": args.segments,
        "share": settings.sender_rate_share,
        "client_requests_per_minute": settings.client_requests_per_minute,
        "dispatchers": args.dispatchers,
    }
    plan = plan_notification(recipients, pool, **kw)
    whatifs = suggestions(recipients, pool, **kw)
    if args.json:
        out = plan.to_json()
        out["what_if"] = [
            {"change": w.change, "seconds": round(w.after, 1), "before": round(w.before, 1)}
            for w in whatifs
        ]
        if region is not None:
            out["region"] = {
                "name": region.region,
                "customers": region.customers,
                "no_consent": region.no_consent,
                "not_textable": region.not_textable,
            }
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    who = ", ".join(f"{n:,} in {c}" for c, n in sorted(recipients.items())) or "nobody"
    if region is not None:
        print(
            f"region {region.region}: {region.customers:,} customers -> {region.total:,} "
            f"numbers to text ({who}); {region.no_consent:,} without consent, "
            f"{region.not_textable:,} not textable (landline, invalid)"
        )
    else:
        print(f"recipients: {who}; {args.segments} segment(s) each")
    print(
        f"notification takes {format_duration(plan.seconds)}; the pace is set by {plan.bottleneck}"
    )
    print(
        f"  (senders paced at {settings.sender_rate_share:.0%} of their rate, "
        "as the dispatcher does)"
    )
    for country, n in sorted(plan.unserved.items()):
        print(f"  {n:,} recipients in {country}: no active sender serves it (no_sender)")
    print("per sender:")
    for load in sorted(plan.loads, key=lambda x: -x.seconds):
        cap = "  EXCEEDS ITS DAILY CAP" if load.over_daily_cap else ""
        print(
            f"  {load.sender.id:>16} {load.sender.type.value:12} {load.sender.rate:>7g}/s "
            f"{load.recipients:>10,.0f} recipients  {format_duration(load.seconds):>8}{cap}"
        )
    print("per sender type:")
    for kind, (n, r, secs) in sorted(plan.by_type().items(), key=lambda x: -x[1][2]):
        print(
            f"  {kind.value:12} {n:>3} sender(s) {r:>10,.0f} recipients  {format_duration(secs):>8}"
        )
    if plan.client_seconds:
        print(
            f"API client limit: {settings.client_requests_per_minute}/min x "
            f"{args.dispatchers} dispatcher(s) alone takes {format_duration(plan.client_seconds)}"
            " (OUTAGE_SMS_CLIENT_REQUESTS_PER_MINUTE)"
        )
    helpful = [w for w in whatifs if w.after < w.before]
    if helpful:
        print("what would change it:")
        for w in helpful:
            print(f"  {w.describe()}")
    elif plan.loads:
        print("more senders change nothing here: the wall is the one named above")
    return 0
