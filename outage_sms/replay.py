"""``outage-sms audit replay``: read the input topics back and check ``sms.audit`` against
decisions re-derived by ``streams.replay``.

Reads with its own consumer and no consumer group at all (partitions assigned by hand,
nothing committed), produces nothing, sends nothing. Every partition of
``customer.regions``, ``outage.events`` and ``sms.inbound`` is read from its first
retained offset (state before the range is rebuilt, not compared) up to a stop offset
taken when the replay starts, and the partitions are merged by record timestamp, each in
offset order. Scopes: everything (default), ``--from/--to`` (record timestamps, through
ListOffsets by time: Apache Kafka only, Tansu answers it wrongly), ``--offsets`` and
``--outage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from outage_sms.admin import end_offsets
from schemas._phone import PHONE_CACHE_SIZE
from streams.content import ContentPolicy
from streams.errors import ConfigurationError
from streams.replay import (
    SOURCE_RANK,
    Comparison,
    InputRecord,
    RecordClass,
    ReplayConfig,
    ReplayEngine,
    SendTimeCheck,
    Source,
    classify_recorded,
    compare,
    parse_time,
    summarise_checks,
)
from streams.reply_texts import ReplyTexts
from topology.gc_passes import fewer_gc_passes
from topology.rules import dispatch_rules, fanout_planner, reply_rules
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

__all__ = ["OffsetRange", "ReplayRequest", "ReplayResult", "build_config", "run_replay"]

log = logging.getLogger(__name__)

INPUTS: dict[Role, Source] = {
    Role.CUSTOMER_REGIONS: Source.CUSTOMERS,
    Role.OUTAGE_EVENTS: Source.OUTAGES,
    Role.INBOUND: Source.INBOUND,
}


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Fewer cyclic-GC passes while the replay builds its state.

    The replay keeps every customer, opt-out and outage it reads, hundreds of thousands of
    long-lived objects, and the collector's default (a pass every 700 allocations,
    rescanning the survivors of older ones) spent about a fifth of the replay's CPU
    rescanning them (``bench.replay``: 4,700-5,700 -> 5,500-6,900 records/s, the same as
    with the collector off). Objects from before are frozen out of its view; cycles
    (rare here) are still collected, a few thousand times less often.
    """
    gc.freeze()
    try:
        with fewer_gc_passes():
            yield
    finally:
        gc.unfreeze()


def build_config(s: Settings) -> ReplayConfig:
    """The rules ``topology.app.create_app`` uses, from the same factories."""
    partitions = s.partitions
    return ReplayConfig(
        partitions=partitions,
        # Memoised: murmur2 is pure Python in aiokafka, and a number recurs (texts, updates).
        partition_of=lru_cache(maxsize=PHONE_CACHE_SIZE)(
            lambda phone: phone_partition(phone.encode(), partitions)
        ),
        planner=fanout_planner(s),
        content=ContentPolicy(s.forbidden_words, s.url_shorteners),
        reply_texts=ReplyTexts(s.program_name, s.support_contact),
        reply_rules=reply_rules(s),
        dispatch_rules=dispatch_rules(s),
        max_record_bytes=s.max_record_bytes,
        fanout_warn_hours=s.fanout_warn_hours,
    )


def rules_of(s: Settings) -> dict[str, Any]:
    """The settings a decision depends on, printed so an auditor sees what was replayed."""
    return {
        "partitions": s.partitions,
        "senders": orjson.loads(s.senders),
        "quiet_hours": s.quiet_hours,
        "quiet_hours_alerts": s.quiet_hours_alerts,
        "eta_change_minutes": s.eta_change_minutes,
        "command_ttl_hours": s.command_ttl_hours,
        "default_timezone": s.default_timezone,
        "optout_scope": s.optout_scope,
        "program_name": s.program_name,
        "fanout_warn_hours": s.fanout_warn_hours,
    }


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """``TOPIC:PARTITION:START-END`` (END exclusive, optional)."""

    topic: str
    partition: int
    start: int
    end: int | None

    @classmethod
    def parse(cls, spec: str) -> OffsetRange:
        try:
            topic, part, span = spec.rsplit(":", 2)
            start, _, end = span.partition("-")
            return cls(topic, int(part), int(start), int(end) if end else None)
        except ValueError:
            raise ConfigurationError(
                f"--offsets {spec!r}: expected TOPIC:PARTITION:START-END, "
                "e.g. outage.events:0:100-200 (END exclusive, may be left out)"
            ) from None


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    start: datetime | None = None
    end: datetime | None = None
    offsets: tuple[OffsetRange, ...] = ()
    outage_id: str | None = None
    examples: int = 10
    progress_every: float = 2.0

    @property
    def full(self) -> bool:
        return self.start is None and self.end is None and not self.offsets


@dataclass
class ReplayResult:
    scope: dict[str, Any]
    rules: dict[str, Any]
    inputs: dict[str, dict[str, dict[str, Any]]]
    stats: Counter[str]
    comparison: Comparison
    send_time: list[SendTimeCheck]
    notes: list[str]
    elapsed: float = 0.0
    replay_seconds: float = 0.0
    examples: int = 10
    send_time_in_scope: list[SendTimeCheck] = field(default_factory=list)

    @property
    def divergences(self) -> int:
        c = self.comparison
        bad = sum(1 for x in self.send_time_in_scope if x.verdict in _BAD_CHECKS)
        return len(c.mismatches) + len(c.recorded_conflicts) + bad

    @property
    def exit_code(self) -> int:
        return 1 if self.divergences else 0

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        checks = summarise_checks(self.send_time_in_scope)
        counts = {
            **{k: v for k, v in sorted(self.stats.items())},
            "recorded_total": c.recorded_total,
            "recorded_in_scope": c.recorded_in_scope,
            "recorded_out_of_scope": c.recorded_out_of_scope,
            "recorded_duplicates": c.recorded_duplicates,
            "matched": c.matched,
            "missing": c.count("missing"),
            "unexpected": c.count("unexpected"),
            "divergent": c.count("divergent"),
            "recorded_conflicts": len(c.recorded_conflicts),
        }
        return {
            "result": {
                "verdict": "divergent" if self.divergences else "reproduced",
                "scope": self.scope,
                "rules": self.rules,
                "inputs": self.inputs,
                "counts": counts,
                "send_time": {
                    "counts": dict(sorted(checks.items())),
                    "checks": [
                        {
                            "audit_id": x.audit_id,
                            "verdict": x.verdict,
                            "recorded": x.recorded,
                            "replayed": x.replayed,
                            "note": x.note,
                        }
                        for x in self.send_time_in_scope
                        if x.verdict != "confirmed"
                    ],
                },
                "not_replayed": dict(sorted(c.other.items())),
                "mismatches": [
                    {
                        "status": m.status,
                        "audit_id": m.audit_id,
                        "decision": m.decision,
                        "reason": m.reason,
                        "differences": [
                            {"field": f, "recorded": a, "replayed": b} for f, a, b in m.differences
                        ],
                    }
                    for m in c.mismatches
                ],
                "recorded_conflicts": c.recorded_conflicts,
                "recipient_changes": [
                    {"outage": o, "phone": p, "recorded": a, "replayed": b}
                    for o, p, a, b in c.recipient_changes
                ],
                "notes": self.notes,
            },
            "run": {
                "elapsed_seconds": round(self.elapsed, 3),
                "replay_seconds": round(self.replay_seconds, 3),
                "input_records_per_second": round(
                    self.stats["input_records"] / self.replay_seconds if self.replay_seconds else 0
                ),
                "derived_decisions_per_second": round(
                    self.stats["derived_decisions"] / self.replay_seconds
                    if self.replay_seconds
                    else 0
                ),
            },
        }

    def write_json(self, path: Path) -> None:
        path.write_bytes(
            orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )

    def write_csv(self, path: Path) -> None:
        """One row per difference: mismatched records, then send-time checks."""
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["status", "audit_id", "decision", "reason", "field", "recorded", "replayed"]
            )
            for m in self.comparison.mismatches:
                rows = m.differences or (("", "", ""),)
                for fld, a, b in rows:
                    w.writerow(
                        [m.status, m.audit_id, m.decision, m.reason, fld, _cell(a), _cell(b)]
                    )
            for x in self.send_time_in_scope:
                if x.verdict != "confirmed":
                    w.writerow(
                        [
                            f"send_time_{x.verdict}",
                            x.audit_id,
                            "",
                            "",
                            x.note,
                            x.recorded,
                            x.replayed,
                        ]
                    )

    def render(self) -> str:
        c = self.comparison
        s = self.stats
        n = self.examples
        checks = summarise_checks(self.send_time_in_scope)
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(s.items()) if k.startswith("rejected:"))
        lines = [
            f"audit replay: {self.scope['description']}",
            f"  input records    {s['input_records']:>9}  ({s['in_scope_records']} in scope, "
            f"{s['warmup_records']} warm-up{'; ' + rejected if rejected else ''})",
            f"  re-derived       {s['derived_records']:>9}  audit records, "
            f"{s['derived_decisions']} decisions (a fan-out record covers up to 1,000 numbers)",
            f"  recorded         {c.recorded_in_scope:>9}  in scope "
            f"(of {c.recorded_total} in sms.audit; {c.recorded_out_of_scope} out of scope, "
            f"{c.recorded_duplicates} repeated ids)",
            f"  matched          {c.matched:>9}",
            f"  missing          {c.count('missing'):>9}  re-derived, not in sms.audit",
            f"  unexpected       {c.count('unexpected'):>9}  in sms.audit, not re-derived",
            f"  divergent        {c.count('divergent'):>9}  same audit_id, different content",
        ]
        if c.recorded_conflicts:
            lines.append(
                f"  conflicting      {len(c.recorded_conflicts):>9}  audit_ids recorded twice "
                "with different content"
            )
        if self.send_time_in_scope:
            lines.append(
                "  send-time audits "
                + ", ".join(f"{k} {v}" for k, v in sorted(checks.items()))
                + " (dispatcher, wall clock: re-checked at their recorded time)"
            )
        if c.other:
            lines.append(
                "  not replayed     "
                + ", ".join(f"{k} {v}" for k, v in sorted(c.other.items()))
                + " (not derived from an input topic)"
            )
        for status in ("missing", "unexpected", "divergent"):
            chosen = [m for m in c.mismatches if m.status == status][:n]
            if chosen:
                lines.append(f"{status}, e.g.:")
            for m in chosen:
                lines.append(f"  {m.audit_id}  {m.decision}:{m.reason or '-'}")
                for fld, a, b in m.differences[:4]:
                    lines.append(f"      {fld}: recorded {_short(a)}, replayed {_short(b)}")
        if c.recipient_changes:
            lines.append(f"per recipient ({len(c.recipient_changes)} numbers changed), e.g.:")
            for o, p, a, b in c.recipient_changes[:n]:
                lines.append(f"  {o} {p}: recorded {a}, replayed {b}")
        odd = [x for x in self.send_time_in_scope if x.verdict != "confirmed"][:n]
        if odd:
            lines.append("send-time audits not confirmed, e.g.:")
            for x in odd:
                lines.append(
                    f"  {x.audit_id}  {x.verdict}: recorded {x.recorded}, replayed {x.replayed}"
                    + (f"  [{x.note}]" if x.note else "")
                )
        for note in self.notes:
            lines.append(f"note: {note}")
        verdict = (
            f"DIVERGENT: {self.divergences} difference(s)"
            if self.divergences
            else "reproduced: every in-scope decision matches sms.audit"
        )
        lines.append(verdict)
        return "\n".join(lines)


_BAD_CHECKS = frozenset({"divergent", "unknown_command"})
"""Send-time verdicts that count as divergences (``irreproducible`` is reported apart)."""


def _cell(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def _short(v: Any, limit: int = 120) -> str:
    text = _cell(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- reading -------------------------------------------------------------------------


def _consumer(s: Settings) -> AIOKafkaConsumer:
    # No group_id: no membership, no commits, so live groups are never touched.
    return AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=(
            "read_committed"
            if s.processing_guarantee == "exactly_once" and s.broker_kind != "tansu"
            else "read_uncommitted"
        ),
        max_partition_fetch_bytes=4 * 1024 * 1024,
        request_timeout_ms=30_000,
    )


async def _partitions(c: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = c.partitions_for_topic(topic)
    deadline = time.monotonic() + 10
    while not parts and time.monotonic() < deadline:
        await c._client.force_metadata_update()  # noqa: SLF001  (aiokafka has no public call)
        parts = c.partitions_for_topic(topic)
        if not parts:
            await asyncio.sleep(0.2)
    if not parts:
        raise ConfigurationError(f"topic {topic} does not exist (or has no partitions)")
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def _merged(
    c: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    stops: Mapping[TopicPartition, int],
    rank: Mapping[str, int],
) -> AsyncIterator[Any]:
    """Records of every partition up to its stop offset, by (timestamp, topic rank,
    partition, offset); each partition stays in offset order (a k-way merge)."""
    pending = {tp for tp in stops if starts[tp] < stops[tp]}
    for tp in pending:
        c.seek(tp, starts[tp])
    buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp in stops}
    heap: list[tuple[int, int, int, int, TopicPartition]] = []

    def push(tp: TopicPartition) -> None:
        m = buffers[tp][0]
        heapq.heappush(heap, (m.timestamp, rank[tp.topic], tp.partition, m.offset, tp))

    while pending or heap:
        need = [tp for tp in pending if not buffers[tp]]
        stalled_since = time.monotonic()
        while need:
            batch = await c.getmany(*need, timeout_ms=500, max_records=10_000)
            for tp, msgs in batch.items():
                was_empty = not buffers[tp]
                buffers[tp].extend(m for m in msgs if m.offset < stops[tp])
                if was_empty and buffers[tp]:
                    push(tp)
            for tp in need:
                if await c.position(tp) >= stops[tp]:
                    pending.discard(tp)
            need = [tp for tp in pending if not buffers[tp]]
            if batch:
                stalled_since = time.monotonic()
            elif need and time.monotonic() - stalled_since > 30:
                raise ConfigurationError(
                    f"no records from {', '.join(f'{t.topic}[{t.partition}]' for t in need)} "
                    "for 30s below their end offsets: is the broker healthy?"
                )
        if not heap:
            continue
        *_, tp = heapq.heappop(heap)
        yield buffers[tp].popleft()
        if buffers[tp]:
            push(tp)


async def _read_audit(
    c: AIOKafkaConsumer, topic: str
) -> tuple[list[tuple[dict[str, Any], bytes]], int]:
    tps = await _partitions(c, topic)
    c.assign(tps)
    begins = await c.beginning_offsets(tps)
    ends = await end_offsets(c, tps)
    out: list[tuple[dict[str, Any], bytes]] = []
    unreadable = 0
    async for m in _merged(c, begins, ends, {topic: 0}):
        if m.value is None:
            continue
        try:
            obj = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(obj, dict) and "audit_id" in obj:
            out.append((obj, m.value))
        else:
            unreadable += 1
    return out, unreadable


async def run_replay(
    s: Settings, req: ReplayRequest, *, clock: Callable[[], float] = time.monotonic
) -> ReplayResult:
    if not s.bootstrap_servers:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is not set: replay reads a broker")
    if (req.start or req.end) and s.broker_kind == "tansu":
        raise ConfigurationError(
            "replay by time needs Apache Kafka: Tansu answers ListOffsets by timestamp "
            "wrongly; replay everything or give --offsets instead"
        )
    began = clock()
    reg = TopicRegistry(s)
    topics = {reg[role].name: src for role, src in INPUTS.items()}
    rank = {name: SOURCE_RANK[src] for name, src in topics.items()}
    config = build_config(s)
    notes: list[str] = []
    c = _consumer(s)
    try:
        await c.start()
    except KafkaConnectionError:
        await c.stop()
        raise ConfigurationError(
            f"cannot reach the Kafka broker at {s.bootstrap_servers}: check KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    try:
        tps = [tp for name in topics for tp in await _partitions(c, name)]
        fanout_parts = len(await _partitions(c, reg[Role.OUTAGE_FANOUT].name))
        if fanout_parts != s.partitions:
            raise ConfigurationError(
                f"OUTAGE_SMS_PARTITIONS={s.partitions} but {reg[Role.OUTAGE_FANOUT].name} has "
                f"{fanout_parts} partitions: replay with the worker's partition count"
            )
        c.assign(tps)
        begins = await c.beginning_offsets(tps)
        ends = await end_offsets(c, tps)
        stops = dict(ends)
        scope_from: dict[TopicPartition, int] = {tp: begins[tp] for tp in tps}
        scope_to: dict[TopicPartition, int] = dict(ends)
        description = "everything"
        if req.start or req.end:
            if req.start:
                found = await c.offsets_for_times(
                    {tp: int(req.start.timestamp() * 1000) for tp in tps}
                )
                scope_from = {tp: (o.offset if o else ends[tp]) for tp, o in found.items()}
            if req.end:
                found = await c.offsets_for_times(
                    {tp: int(req.end.timestamp() * 1000) for tp in tps}
                )
                scope_to = {tp: (o.offset if o else ends[tp]) for tp, o in found.items()}
                stops = dict(scope_to)
            description = (
                f"records from {req.start.isoformat() if req.start else 'the start'} "
                f"to {req.end.isoformat() if req.end else 'now'}"
            )
        elif req.offsets:
            named = {tp.topic: tp.topic for tp in tps}
            for base in topics:
                named[base.removeprefix(s.topic_prefix)] = base
            scope_from = {tp: ends[tp] for tp in tps}  # nothing in scope unless named
            for r in req.offsets:
                tp = TopicPartition(named.get(r.topic, r.topic), r.partition)
                if tp not in ends:
                    raise ConfigurationError(
                        f"--offsets: {r.topic}[{r.partition}] is not a partition of an input "
                        f"topic ({', '.join(sorted(topics))})"
                    )
                scope_from[tp] = max(r.start, begins[tp])
                scope_to[tp] = min(r.end, ends[tp]) if r.end is not None else ends[tp]
                stops[tp] = scope_to[tp]
            description = "offsets " + ", ".join(
                f"{r.topic}[{r.partition}] {r.start}-{r.end if r.end is not None else 'end'}"
                for r in req.offsets
            )
        if req.outage_id:
            description += f", outage {req.outage_id}"
        for tp in tps:
            if begins[tp] > 0:
                notes.append(
                    f"{tp.topic}[{tp.partition}] starts at offset {begins[tp]} (retention): "
                    "decisions that depend on earlier records may diverge"
                )
        inputs = {
            name: {
                str(tp.partition): {
                    "first": begins[tp],
                    "scope": [scope_from[tp], scope_to[tp]],
                    "read_to": stops[tp],
                }
                for tp in tps
                if tp.topic == name
            }
            for name in sorted(topics)
        }

        audit_consumer = _consumer(s)
        await audit_consumer.start()
        try:
            recorded, unreadable = await _read_audit(audit_consumer, reg[Role.AUDIT].name)
        finally:
            await audit_consumer.stop()
        if unreadable:
            notes.append(f"{unreadable} sms.audit records are not audit records (not JSON)")
        send_time = [
            obj for obj, _ in recorded if classify_recorded(obj)[0] is RecordClass.SEND_TIME
        ]
        if req.end:
            end_ms = int(req.end.timestamp() * 1000)
            send_time = [
                a for a in send_time if parse_time(str(a["at"])).timestamp() * 1000 < end_ms
            ]
        if req.outage_id:
            send_time = [a for a in send_time if a.get("outage_id") == req.outage_id]

        engine = ReplayEngine(config)
        engine.expect_send_time(send_time)
        started = clock()
        last_report = started
        last_ts = 0
        gaps = Counter[str]()
        previous: dict[TopicPartition, int] = {}
        with bulk_gc():
            async for m in _merged(c, begins, stops, rank):
                tp = TopicPartition(m.topic, m.partition)
                prior = previous.get(tp)
                if prior is not None and m.offset != prior + 1:
                    gaps[m.topic] += 1
                previous[tp] = m.offset
                in_scope = scope_from[tp] <= m.offset < scope_to[tp]
                if req.outage_id and (
                    topics[m.topic] is not Source.OUTAGES or m.key != req.outage_id.encode()
                ):
                    in_scope = False
                engine.feed(
                    InputRecord(
                        topics[m.topic],
                        m.partition,
                        m.offset,
                        m.timestamp,
                        m.key,
                        m.value,
                        in_scope,
                    )
                )
                last_ts = m.timestamp
                now = clock()
                if now - last_report >= req.progress_every:
                    done = engine.stats["input_records"]
                    log.info(
                        "replay: %d input records (%.0f/s), %d decisions re-derived, at %s",
                        done,
                        done / (now - started),
                        engine.stats["derived_decisions"],
                        datetime.fromtimestamp(last_ts / 1000).astimezone().isoformat(),
                    )
                    last_report = now
            engine.finish()
        replay_seconds = clock() - started
    finally:
        await c.stop()

    for topic, n in sorted(gaps.items()):
        notes.append(
            f"{topic}: {n} gaps in offsets (compaction removed records, or transaction "
            "markers): a compacted customer history replays only its latest values"
        )
    claims: Callable[[str | None, Mapping[str, Any]], bool]
    if req.outage_id:
        oid = req.outage_id
        claims = lambda _src, rec: rec.get("outage_id") == oid  # noqa: E731
    elif req.full:
        claims = lambda _src, _rec: True  # noqa: E731
    else:
        claims = lambda _src, _rec: False  # noqa: E731
    comparison = compare(engine.derived, recorded, engine.sources, claims)
    by_id = {str(a["audit_id"]): a for a in send_time}
    in_scope_checks = [
        x
        for x in engine.send_time
        if x.verdict != "unknown_command" or claims(None, by_id.get(x.audit_id, {}))
    ]
    duplicates = sum(1 for x in in_scope_checks if x.verdict == "irreproducible")
    if duplicates:
        notes.append(
            f"{duplicates} send-time 'duplicate' audits are irreproducible: they depend on the "
            "dispatcher's ledger (commands redelivered to it), not on the input topics"
        )
    if in_scope_checks:
        notes.append(
            "send-time audits use the dispatcher's wall clock; they were re-checked with "
            "streams.dispatch.decide at their recorded time against the replayed opt-outs "
            "and outages (the dispatcher's replicated views lag by milliseconds)"
        )
    return ReplayResult(
        scope={
            "description": description,
            "from": req.start.isoformat() if req.start else None,
            "to": req.end.isoformat() if req.end else None,
            "offsets": [
                f"{r.topic}:{r.partition}:{r.start}-{'' if r.end is None else r.end}"
                for r in req.offsets
            ],
            "outage": req.outage_id,
        },
        rules=rules_of(s),
        inputs=inputs,
        stats=engine.stats,
        comparison=comparison,
        send_time=engine.send_time,
        send_time_in_scope=in_scope_checks,
        notes=notes,
        elapsed=clock() - began,
        replay_seconds=replay_seconds,
        examples=req.examples,
    )


def replay_main(
    s: Settings, req: ReplayRequest, json_path: Path | None, csv_path: Path | None
) -> int:
    result = asyncio.run(run_replay(s, req))
    print(result.render(), flush=True)  # the report is the command's output
    run = result.to_json()["run"]
    log.info(
        "replayed %d input records in %.1fs: %s records/s, %s decisions/s",
        result.stats["input_records"],
        result.replay_seconds,
        run["input_records_per_second"],
        run["derived_decisions_per_second"],
    )
    if json_path is not None:
        result.write_json(json_path)
    if csv_path is not None:
        result.write_csv(csv_path)
    return result.exit_code
