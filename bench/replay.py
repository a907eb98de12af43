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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from outage_sms.replay import build_config, bulk_gc
from schemas._phone import analyse_number
from streams.intake import decode_customer, decode_inbound
from streams.replay import InputRecord, ReplayConfig, ReplayEngine, Source, compare
from topology.settings import Settings

#: CPU time of this thread: "on one core", whatever else the machine runs.
clock = time.thread_time

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
    print(replay_bench(args.customers, args.texts, args.outages, args.regions))
    return 0


def replay_bench(customers: int, texts: int, outages: int = 5, regions: int = 4) -> str:
    """The replay's rates and the CPU per part, as markdown (``bench.run`` includes it)."""
    out: list[str] = []
    data = records(customers, texts, outages, regions)
    config = build_config(Settings(partitions=8))
    engine = ReplayEngine(config)
    # source -> [seconds, records, decisions]
    per_source: dict[str, list[float]] = {s.value: [0.0, 0, 0] for s in Source}
    stats = engine.stats
    analyse_number.cache_clear()  # every number is new to the replay, as on a cold start
    gc.collect()
    wall = time.perf_counter()
    start = clock()
    with bulk_gc():  # as `outage-sms audit replay` runs it
        for r in data:
            before = stats["derived_decisions"]
            t = clock()
            engine.feed(r)
            cell = per_source[r.source.value]
            cell[0] += clock() - t
            cell[1] += 1
            cell[2] += stats["derived_decisions"] - before
        engine.finish()
    replay_s = clock() - start
    wall_s = time.perf_counter() - wall

    recorded = [(orjson.loads(v), v) for v in engine.derived.values()]
    t = clock()
    result = compare(engine.derived, recorded, engine.sources, lambda _s, _r: True)
    compare_s = clock() - t
    assert not result.mismatches

    # Ceiling in the same run: parsing every input record with orjson and nothing more.
    t = clock()
    for r in data:
        if r.value is not None:
            orjson.loads(r.value)
    ceiling_s = clock() - t

    n, d = engine.stats["input_records"], engine.stats["derived_decisions"]
    rows: list[tuple[str, Any, Any]] = [
        ("input records", n, f"{n / replay_s:,.0f}/s"),
        ("decisions re-derived", d, f"{d / replay_s:,.0f}/s"),
        ("audit records compared", len(recorded), f"{len(recorded) / compare_s:,.0f}/s"),
        ("input records, replay + compare", n, f"{n / (replay_s + compare_s):,.0f}/s"),
        (
            "ceiling: orjson.loads of each input record",
            n,
            f"{n / ceiling_s:,.0f}/s (replay at {ceiling_s / replay_s:.1%} of it)",
        ),
    ]
    for source, (secs, count, decided) in per_source.items():
        if count:
            rows.append((f"  {source} records alone", int(count), f"{count / secs:,.0f}/s"))
            rows.append((f"  {source} decisions alone", int(decided), f"{decided / secs:,.0f}/s"))
    out.append(
        f"| one core (CPU time of the replay thread), {sys.implementation.name} "
        f"{sys.version.split()[0]} | count | rate |"
    )
    out.append("| --- | ---: | ---: |")
    for name, count, rate in rows:
        out.append(f"| {name} | {count:,} | {rate} |")
    out.append(
        f"\nwall clock {wall_s:.2f} s for {replay_s:.2f} s of CPU (other load on the machine)"
    )
    out.append("")
    out.append(parts(data, config))
    return "\n".join(out)


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    """Under the replay's own GC regime: with the default one, the lists each part keeps
    made the collector rescan the engines built before it, and a row measured that (the
    orjson row read 19.5 microseconds for a parse that takes 1-2)."""
    gc.collect()
    with bulk_gc():
        t = clock()
        fn()
        elapsed = clock() - t
    return elapsed / max(n, 1) * 1e6


def parts(data: list[InputRecord], config: ReplayConfig) -> str:
    """CPU microseconds per record of each part of the replay, measured apart.

    Answers "where does a record's time go", so the 50,000/s target (20 microseconds)
    can be weighed part by part: decoding (pydantic), the number's analysis
    (``phonenumbers``, once per distinct number), the agents' own functions.
    """
    cust = [r for r in data if r.source is Source.CUSTOMERS]
    texts = [r for r in data if r.source is Source.INBOUND]
    mx = config.max_record_bytes
    phones = [orjson.loads(r.value or b"{}")["phone"] for r in cust]
    rows: list[tuple[str, float]] = []

    analyse_number.cache_clear()
    rows.append(
        (
            "phonenumbers analysis, per distinct number (cold)",
            _cpu_us(lambda: [analyse_number(p) for p in phones], len(phones)),
        )
    )
    rows.append(
        (
            "  the same, remembered (warm)",
            _cpu_us(lambda: [analyse_number(p) for p in phones], len(phones)),
        )
    )
    rows.append(
        (
            "decode a customer record, number remembered (pydantic)",
            _cpu_us(lambda: [decode_customer(r.key, r.value, mx) for r in cust], len(cust)),
        )
    )
    rows.append(
        (
            "decode an inbound text, number remembered (pydantic)",
            _cpu_us(lambda: [decode_inbound(r.key, r.value, mx) for r in texts], len(texts)),
        )
    )
    rows.append(
        (
            "  of which orjson.loads (intake's schema_version check)",
            _cpu_us(
                lambda: [orjson.loads(r.value or b"") for r in cust + texts], len(cust) + len(texts)
            ),
        )
    )
    engine = ReplayEngine(config)
    for r in cust:
        engine.feed(r)
    warm = _cpu_us(lambda: [engine.feed(r) for r in cust], len(cust))
    rows.append(("customer record through the replay, number remembered", warm))
    engine2 = ReplayEngine(config)
    for r in data:
        if r.source is not Source.INBOUND:
            engine2.feed(r)
    rows.append(
        (
            "inbound text through the replay (decode + handle_inbound + audit bytes)",
            _cpu_us(lambda: [engine2.feed(r) for r in texts], len(texts)),
        )
    )
    out = ["| part (CPU time, one core) | microseconds per record |", "| --- | ---: |"]
    out += [f"| {name} | {us:,.1f} |" for name, us in rows]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
