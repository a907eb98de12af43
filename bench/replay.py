"""Audit replay speed on one core: ``python -m bench.replay [--customers N] [--texts N]``.

Runs the pure engine (``streams.replay``) over synthetic input records held in memory
(no broker: reading Kafka is measured by the consumer ceilings in ``bench.run``), then the
comparison against the same records as "recorded". Two different counts, reported apart:

- input records/s: records of customer.regions, outage.events and sms.inbound re-derived
  (decoded, validated, run through the agents' functions);
- decisions/s: decisions re-derived, one per fan-out recipient and one per inbound audit
  record. One outage record fans out to every subscriber of its regions, so this number
  depends on the mix; the input-record rate is the honest one for the 50,000/s target.

Each phase is timed apart (customers, outages, texts), because their costs differ by an
order of magnitude: a customer or a text is validated by pydantic and phonenumbers, an
outage version is one record and thousands of decisions.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from outage_sms.replay import build_config
from streams.replay import InputRecord, ReplayEngine, Source, compare
from topology.settings import Settings

T0 = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
BODIES = ["STOP", "status", "HELP", "when is the power back?", "thanks", "START", "ok"]


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def records(customers: int, texts: int, outages: int, regions: int) -> list[InputRecord]:
    rnd = random.Random(7)
    out: list[InputRecord] = []
    ms = int(T0.timestamp() * 1000)
    phones = [f"+1415{2000000 + i:07d}" for i in range(customers)]
    for i, phone in enumerate(phones):
        value = {
            "schema_version": 1,
            "customer_id": f"C{i}",
            "phone": phone,
            "regions": [f"R{i % regions}"],
            "sms_consent": i % 10 != 0,
            "language": "es" if i % 7 == 0 else "en",
            "timezone": "America/Los_Angeles",
        }
        out.append(
            InputRecord(Source.CUSTOMERS, i % 8, i, ms, f"C{i}".encode(), orjson.dumps(value))
        )
    ms += 1000
    steps = [("detected", 0), ("updated", 45), ("resolved", 0)]
    for o in range(outages):
        for v, (status, shift) in enumerate(steps, start=1):
            at = T0 + timedelta(minutes=10 * o + 3 * v)
            value = {
                "schema_version": 1,
                "outage_id": f"O{o}",
                "version": v,
                "status": status,
                "severity": "service",
                "regions": [f"R{o % regions}"],
                "summary": "Storm damage on Main St",
                "eta": _z(T0 + timedelta(hours=3, minutes=shift)),
                "status_url": "https://status.example.com/o/1",
                "occurred_at": _z(at),
            }
            out.append(
                InputRecord(
                    Source.OUTAGES,
                    o % 8,
                    len(out),
                    int(at.timestamp() * 1000),
                    f"O{o}".encode(),
                    orjson.dumps(value),
                )
            )
        for t in range(texts // max(outages, 1)):
            phone = phones[rnd.randrange(customers)]
            at = T0 + timedelta(minutes=10 * o + 4, seconds=t / 100)
            value = {
                "schema_version": 1,
                "message_id": f"m{o}-{t}",
                "from": phone,
                "to": "87654",
                "body": rnd.choice(BODIES),
                "received_at": _z(at),
            }
            out.append(
                InputRecord(
                    Source.INBOUND,
                    0,
                    len(out),
                    int(at.timestamp() * 1000),
                    phone.encode(),
                    orjson.dumps(value),
                )
            )
    out.sort(key=lambda r: (r.timestamp_ms, r.source.value, r.offset))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--texts", type=int, default=10_000)
    p.add_argument("--outages", type=int, default=5)
    p.add_argument("--regions", type=int, default=4)
    args = p.parse_args(argv)

    data = records(args.customers, args.texts, args.outages, args.regions)
    config = build_config(Settings(partitions=8))
    engine = ReplayEngine(config)
    # source -> [seconds, records, decisions]
    per_source: dict[str, list[float]] = {s.value: [0.0, 0, 0] for s in Source}
    stats = engine.stats
    gc.collect()
    start = time.perf_counter()
    for r in data:
        before = stats["derived_decisions"]
        t = time.perf_counter()
        engine.feed(r)
        cell = per_source[r.source.value]
        cell[0] += time.perf_counter() - t
        cell[1] += 1
        cell[2] += stats["derived_decisions"] - before
    engine.finish()
    replay_s = time.perf_counter() - start

    recorded = [(orjson.loads(v), v) for v in engine.derived.values()]
    t = time.perf_counter()
    result = compare(engine.derived, recorded, engine.sources, lambda _s, _r: True)
    compare_s = time.perf_counter() - t
    assert not result.mismatches

    n, d = engine.stats["input_records"], engine.stats["derived_decisions"]
    rows: list[tuple[str, Any, Any]] = [
        ("input records", n, f"{n / replay_s:,.0f}/s"),
        ("decisions re-derived", d, f"{d / replay_s:,.0f}/s"),
        ("audit records compared", len(recorded), f"{len(recorded) / compare_s:,.0f}/s"),
        ("input records, replay + compare", n, f"{n / (replay_s + compare_s):,.0f}/s"),
    ]
    for source, (secs, count, decided) in per_source.items():
        if count:
            rows.append((f"  {source} records alone", int(count), f"{count / secs:,.0f}/s"))
            rows.append((f"  {source} decisions alone", int(decided), f"{decided / secs:,.0f}/s"))
    print(f"| one core, {sys.implementation.name} {sys.version.split()[0]} | count | rate |")
    print("| --- | ---: | ---: |")
    for name, count, rate in rows:
        print(f"| {name} | {count:,} | {rate} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
