"""``outage-sms demo``: the whole system on one machine, in well under a minute.

An embedded Tansu broker, the worker (``outage-sms worker`` in its own process, as an
operator runs it), the fake Genesys provider and the dispatcher (both in this process),
a few hundred sample customers, and one outage that is detected, updated and resolved
while some customers text STOP or ask when it will be fixed. What the demo prints comes
from the topics (``sms.send-commands``, ``sms.delivery-status``, ``sms.audit``) and from
what the fake provider received: the same evidence an operator or auditor would use.

Every stage has a deadline and a stall watchdog, so a broken set-up fails with the stage
named and the worker's log tail instead of hanging; every process is stopped on exit,
on error and on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.masking import mask_phone
from streams.report import OutageReport, render_funnel
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

from .brokers import RunningBroker, start_broker, terminate

__all__ = ["DemoConfig", "DemoError", "run_demo"]

SHORT_CODE = "87654"
OUTAGE_ID = "DEMO-STORM-1"
#: Quiet hours of zero length never apply (streams.fanout.FanoutRules.in_quiet_hours):
#: without this, updates and "restored" texts would wait for the morning in some zones.
NO_QUIET_HOURS = "00:00-00:00"

#: region -> (area code, IANA zone); MOUNTAIN is not in the outage.
REGIONS = {
    "NORTH": ("212", "America/New_York"),
    "CENTRAL": ("312", "America/Chicago"),
    "MOUNTAIN": ("303", "America/Denver"),
    "WEST": ("415", "America/Los_Angeles"),
    "LAKESHORE": ("416", "America/Toronto"),
}
OUTAGE_REGIONS = ["NORTH", "CENTRAL", "WEST", "LAKESHORE"]
LANDLINE = "+442079460123"  # a London fixed line: cannot receive SMS


class DemoError(RuntimeError):
    """A stage of the demo failed; the message names the stage and what to look at."""


@dataclass
class DemoConfig:
    customers: int = 300
    rate: float = 200.0
    """The short code's rate (messages/s); the fake provider enforces it."""
    partitions: int = 4
    stage_timeout: float = 60.0
    """A stage that has not finished after this many seconds fails."""
    stall_timeout: float = 30.0
    """A stage whose counts have not moved for this many seconds fails."""
    progress_every: float = 1.0
    json_path: Path | None = None
    keep_logs: bool = False


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    phone: str
    region: str
    consent: bool
    language: str
    timezone: str | None

    def record(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "customer_id": self.customer_id,
            "phone": self.phone,
            "regions": [self.region],
            "sms_consent": self.consent,
            "language": self.language,
            "timezone": self.timezone,
            "consent_recorded_at": "2026-01-15T10:00:00Z",
        }


def sample_customers(n: int, seed: int = 7) -> list[Customer]:
    """Deterministic customers: five regions in four zones and two countries, one in
    nine without SMS consent, one in seven speaking Spanish, and a landline."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security
    names = list(REGIONS)
    out = []
    for i in range(n):
        region = names[i % len(names)]
        area, zone = REGIONS[region]
        out.append(
            Customer(
                customer_id=f"C{i:04d}",
                phone=f"+1{area}555{i:04d}",
                region=region,
                consent=i % 9 != 4,  # 9 and 5 coprime: in every region
                language="es" if i % 7 == 3 else "en",
                # Half the records carry a zone; the others get the number's.
                timezone=zone if rng.random() < 0.5 else None,
            )
        )
    out.append(Customer("C9000", LANDLINE, "NORTH", True, "en", "Europe/London"))
    return out


# --- watching the topics ---------------------------------------------------------------


@dataclass
class Tap:
    """Reads the output topics from the start, without a consumer group, and keeps
    the counts the progress line and the summary need."""

    settings: Settings
    report: OutageReport = field(default_factory=lambda: OutageReport(OUTAGE_ID))
    commands: Counter[str] = field(default_factory=Counter)
    """kind -> send commands seen."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """outcome[:reason] -> commands (first terminal status per command)."""
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    summaries: Counter[int] = field(default_factory=Counter)
    """outage version -> partitions that reported their fan-out summary."""
    subscribers: set[bytes] = field(default_factory=set)
    records: int = 0
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        reg = TopicRegistry(self.settings)
        self._names = {
            reg[r].name: r
            for r in (
                Role.SEND_COMMANDS,
                Role.DELIVERY_STATUS,
                Role.AUDIT,
                Role.SUBSCRIBERS_CHANGELOG,
            )
        }
        c = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Live progress: on Tansu an empty fetch is held its full time (fetch_wait).
            fetch_max_wait_ms=self.settings.fetch_wait_ms() or 500,
        )
        await c.start()
        tps = [
            TopicPartition(name, p) for name in self._names for p in range(self.settings.partitions)
        ]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._consumer = c

    async def poll(self) -> None:
        assert self._consumer is not None  # noqa: S101
        batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
        for tp, msgs in batch.items():
            role = self._names[tp.topic]
            for m in msgs:
                self.records += 1
                if role is Role.SUBSCRIBERS_CHANGELOG:
                    if m.key is not None:
                        (self.subscribers.add if m.value else self.subscribers.discard)(m.key)
                    continue
                if m.value is None:
                    continue
                rec = orjson.loads(m.value)
                if role is Role.SEND_COMMANDS:
                    self.commands[rec.get("kind", "?")] += 1
                elif role is Role.DELIVERY_STATUS:
                    self._status(rec)
                else:
                    self.audits.append(rec)
                    self.report.add_audit(rec)
                    if rec.get("decision") == "fanout_summary" and rec.get("outage_id") == (
                        OUTAGE_ID
                    ):
                        self.summaries[int(rec["outage_version"])] += 1

    def _status(self, rec: dict[str, Any]) -> None:
        self.report.add_status(rec)
        cid = rec["command_id"]
        if rec["outcome"] in ("delivered", "undelivered") or cid in self.statuses:
            return
        self.statuses[cid] = rec
        reason = rec.get("reason")
        self.outcomes[rec["outcome"] + (f":{reason}" if reason else "")] += 1

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def audits_of(self, decision: str) -> list[dict[str, Any]]:
        return [a for a in self.audits if a.get("decision") == decision]

    def progress(self) -> str:
        sent = self.outcomes["sent"]
        held: Counter[str] = Counter()
        for row in self.report.funnel().versions:
            held.update(row.suppressed)
        for label, n in self.outcomes.items():
            if label.startswith("suppressed:"):
                held[label.split(":", 1)[1] + "@send"] += n
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(held.items())) or "none"
        queued = sum(self.commands.values())
        return (
            f"commands {queued:>4} | sent {sent:>4} | waiting {queued - len(self.statuses):>4} "
            f"| suppressed: {reasons}"
        )


# --- the run -----------------------------------------------------------------------------


class Demo:
    def __init__(self, config: DemoConfig, out: TextIO) -> None:
        self.config = config
        self.out = out
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="outage-sms-demo-"))
        self.broker: RunningBroker | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log = self.workdir / "worker.log"
        self.customers = sample_customers(config.customers)
        self.by_phone = {c.phone: c for c in self.customers}
        self.inbound: list[tuple[Customer, str, str]] = []
        """(customer, text, what it demonstrates) the customers sent."""

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # ---- processes ----------------------------------------------------------------

    def settings(self, bootstrap: str) -> Settings:
        pool = [
            {
                "id": SHORT_CODE,
                "type": "short_code",
                "rate": self.config.rate,
                "countries": ["US", "CA"],
            }
        ]
        return Settings().model_copy(
            update={
                "bootstrap_servers": bootstrap,
                "broker_kind": "tansu",
                "store": "memory://",
                "data_dir": self.workdir / "data",
                "partitions": self.config.partitions,
                "quiet_hours": NO_QUIET_HOURS,
                "senders": orjson.dumps(pool).decode(),
                "client_requests_per_minute": 1_000_000,
            }
        )

    def worker_env(self, s: Settings) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers or "",
                "OUTAGE_SMS_BROKER_KIND": s.broker_kind,
                "OUTAGE_SMS_STORE": s.store,
                "OUTAGE_SMS_DATA_DIR": str(s.data_dir),
                "OUTAGE_SMS_PARTITIONS": str(s.partitions),
                "OUTAGE_SMS_QUIET_HOURS": s.quiet_hours,
                "OUTAGE_SMS_SENDERS": s.senders,
                "OUTAGE_SMS_LOG_LEVEL": "INFO",  # "Worker ready" is logged at INFO
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start_worker(self, s: Settings) -> None:
        with self.worker_log.open("wb") as log:
            self.worker = subprocess.Popen(  # noqa: S603 - our own entry point
                [sys.executable, "-m", "outage_sms", "worker", "--no-create-topics"],
                env=self.worker_env(s),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: Ctrl-C reaches the demo, which stops it in order.
                start_new_session=True,
            )

    def worker_tail(self, lines: int = 30) -> str:
        try:
            text = self.worker_log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no worker log)"
        return "\n".join(text[-lines:])

    async def await_worker_ready(self) -> None:
        deadline = time.monotonic() + self.config.stage_timeout
        while "Worker ready" not in self.worker_log.read_text(errors="replace"):
            assert self.worker is not None  # noqa: S101
            if self.worker.poll() is not None:
                raise DemoError(
                    f"the worker exited with code {self.worker.returncode} while starting; "
                    f"its log ({self.worker_log}) ends:\n{self.worker_tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the worker did not log 'Worker ready' within "
                    f"{self.config.stage_timeout:.0f}s; its log ends:\n{self.worker_tail()}"
                )
            await asyncio.sleep(0.1)

    def stop_processes(self) -> None:
        if self.worker is not None:
            terminate(self.worker, grace=20)
            self.worker = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if not self.config.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- stages -------------------------------------------------------------------

    async def stage(
        self, tap: Tap, name: str, done: Callable[[], bool], detail: Callable[[], str]
    ) -> None:
        """Print progress about once a second until ``done()``; fail on deadline or stall."""
        t0 = time.monotonic()
        last_change, last_sig = t0, -1
        next_line = t0
        while True:
            await tap.poll()
            now = time.monotonic()
            if done():
                self.say(f"  [{self.elapsed():5.1f}s] {name}: done | {tap.progress()}")
                return
            if tap.records != last_sig:
                last_sig, last_change = tap.records, now
            if self.worker is not None and self.worker.poll() is not None:
                raise DemoError(
                    f"stage '{name}': the worker exited ({self.worker.returncode}); its log "
                    f"ends:\n{self.worker_tail()}"
                )
            if now - t0 > self.config.stage_timeout or now - last_change > (
                self.config.stall_timeout
            ):
                why = (
                    f"did not finish within {self.config.stage_timeout:.0f}s"
                    if now - t0 > self.config.stage_timeout
                    else f"made no progress for {self.config.stall_timeout:.0f}s"
                )
                raise DemoError(
                    f"stage '{name}' {why} ({detail()}; {tap.progress()}). "
                    f"The worker's log ({self.worker_log}) ends:\n{self.worker_tail()}"
                )
            if now >= next_line:
                self.say(f"  [{self.elapsed():5.1f}s] {name}: {tap.progress()}")
                next_line = now + self.config.progress_every

    def fanout_done(self, tap: Tap, version: int) -> Callable[[], bool]:
        def check() -> bool:
            if tap.summaries[version] < self.config.partitions:
                return False
            rows = {r.version: r for r in tap.report.funnel().versions}
            return version in rows and rows[version].pending == 0

        return check

    async def run(self) -> dict[str, Any]:
        cfg = self.config
        self.say("outage-sms demo: the embedded broker, the worker, the fake Genesys provider,")
        self.say(f"the dispatcher, {len(self.customers)} sample customers and one outage.")
        self.say(
            f"Quiet hours are OFF for the demo (OUTAGE_SMS_QUIET_HOURS={NO_QUIET_HOURS}); by "
            "default updates and restored texts wait for 08:00 recipient-local."
        )
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.say("(KAFKA_BOOTSTRAP_SERVERS is ignored: the demo runs its own broker.)")
        self.broker = await asyncio.to_thread(start_broker, "tansu")
        s = self.settings(self.broker.bootstrap)
        self.say(
            f"  [{self.elapsed():5.1f}s] Tansu broker on {self.broker.bootstrap}; sender: short "
            f"code {SHORT_CODE} at {cfg.rate:g}/s (US, CA); {cfg.partitions} partitions"
        )
        from .admin import ensure_topics

        await ensure_topics(s)
        self.start_worker(s)
        from streams.genesys import GenesysClient, GenesysConfig, make_http_client
        from topology.dispatcher import Dispatcher

        from .fake_provider import FakeConfig, FakeProvider

        fake = FakeProvider(FakeConfig(senders={SHORT_CODE: cfg.rate}, client_limit=None))
        tap = Tap(s)
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(fake)
            http = await stack.enter_async_context(make_http_client(max_connections=8))
            genesys = GenesysClient(
                http,
                GenesysConfig(
                    client_id="fake-client",
                    client_secret="fake-secret",  # noqa: S106 - the fake's demo credential
                    api_base_url=url,
                    login_base_url=url,
                ),
            )
            dispatcher = Dispatcher(s, genesys)
            await dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
            await tap.start()
            stack.push_async_callback(tap.stop)
            self.say(f"  [{self.elapsed():5.1f}s] fake Genesys on {url}; dispatcher started")
            await self.await_worker_ready()
            pid = self.worker.pid if self.worker else "?"
            self.say(f"  [{self.elapsed():5.1f}s] worker ready (pid {pid}, log: {self.worker_log})")
            return await self._story(s, tap, fake, dispatcher)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _story(self, s: Settings, tap: Tap, fake: Any, dispatcher: Any) -> dict[str, Any]:
        reg = TopicRegistry(s)
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            sent = [
                await producer.send(  # batched: each send only enqueues
                    reg[Role.CUSTOMER_REGIONS].name,
                    orjson.dumps(c.record()),
                    key=c.customer_id.encode(),
                )
                for c in self.customers
            ]
            await asyncio.gather(*sent)
            phones = len({c.phone for c in self.customers})
            self.say(
                f"\n1. {len(self.customers)} customers in {len(REGIONS)} regions: "
                f"{sum(not c.consent for c in self.customers)} without SMS consent, 1 landline, "
                f"{sum(c.language == 'es' for c in self.customers)} in Spanish"
            )
            await self.stage(
                tap,
                "customers loaded",
                lambda: len(tap.subscribers) >= phones,
                lambda: f"{len(tap.subscribers)} of {phones} numbers in the subscriber table",
            )

            t0 = datetime.now(UTC).replace(microsecond=0)
            eta1 = t0 + timedelta(hours=2)
            eta2 = eta1 + timedelta(minutes=90)

            async def outage(version: int, status: str, eta: datetime | None) -> None:
                event = {
                    "schema_version": 1,
                    "outage_id": OUTAGE_ID,
                    "version": version,
                    "status": status,
                    "severity": "service",
                    "regions": OUTAGE_REGIONS,
                    "summary": "Storm damage to power lines; crews are on site",
                    "eta": eta.isoformat() if eta else None,
                    "status_url": "https://status.citypower.example/o/storm-1",
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                await producer.send_and_wait(
                    reg[Role.OUTAGE_EVENTS].name, orjson.dumps(event), key=OUTAGE_ID.encode()
                )

            self.say(
                f"\n2. outage {OUTAGE_ID} detected in {', '.join(OUTAGE_REGIONS)} "
                f"(not MOUNTAIN), ETA {eta1:%H:%M} UTC"
            )
            await outage(1, "detected", eta1)
            await self.stage(tap, "alerts", self.fanout_done(tap, 1), lambda: "fan-out v1")

            alerted = [
                self.by_phone[m.to] for m in fake.messages if m.to in self.by_phone
            ]  # in the order they were sent
            unaffected = next(c for c in self.customers if c.region == "MOUNTAIN" and c.consent)
            picks = alerted[::7]
            self.inbound = [
                (picks[0], "STOP", "opt-out keyword"),
                (picks[1], "please stop texting me", "opt-out in plain words"),
                (picks[2], "when will it be fixed?", "status question"),
                (picks[3], "STATUS", "status keyword"),
                (picks[4], "HELP", "help keyword"),
                (unaffected, "is the power out?", "status, outside the outage"),
            ]
            self.say(
                f"\n3. {len(self.inbound)} customers text back: "
                + ", ".join(repr(text) for _, text, _ in self.inbound)
            )
            for i, (c, text, _) in enumerate(self.inbound):
                msg = {
                    "schema_version": 1,
                    "message_id": f"demo-in-{i}",
                    "from": c.phone,
                    "to": SHORT_CODE,
                    "body": text,
                    "received_at": datetime.now(UTC).isoformat(),
                }
                await producer.send_and_wait(
                    reg[Role.INBOUND].name, orjson.dumps(msg), key=c.phone.encode()
                )

            def replies_done() -> bool:
                if len(tap.audits_of("inbound_received")) < len(self.inbound):
                    return False
                cids = [a["facts"].get("command_id") for a in tap.audits_of("reply")]
                return all(c in tap.statuses for c in cids if c)

            await self.stage(
                tap,
                "replies",
                replies_done,
                lambda: (
                    f"{len(tap.audits_of('inbound_received'))} of {len(self.inbound)} texts handled"
                ),
            )

            self.say(
                f"\n4. update: ETA moves by 90 minutes to {eta2:%H:%M} UTC "
                f"(more than OUTAGE_SMS_ETA_CHANGE_MINUTES={s.eta_change_minutes})"
            )
            await outage(2, "updated", eta2)
            await self.stage(tap, "updates", self.fanout_done(tap, 2), lambda: "fan-out v2")

            self.say("\n5. resolved: power is back")
            await outage(3, "resolved", None)
            await self.stage(tap, "restored", self.fanout_done(tap, 3), lambda: "fan-out v3")
        finally:
            await producer.stop()
        return self.summary(tap, fake, dispatcher)

    # ---- the summary --------------------------------------------------------------

    def summary(self, tap: Tap, fake: Any, dispatcher: Any) -> dict[str, Any]:
        funnel = tap.report.funnel()
        kinds = {
            st.get("provider_message_id"): st.get("kind")
            for st in tap.statuses.values()
            if st.get("provider_message_id")
        }
        received: dict[str, list[str]] = {}
        texts: dict[str, list[tuple[str, str]]] = {}
        for m in fake.messages:
            c = self.by_phone.get(m.to)
            if c is None:
                continue
            kind = str(kinds.get(m.id) or "?")
            received.setdefault(c.customer_id, []).append(kind)
            texts.setdefault(c.customer_id, []).append((kind, m.text))

        replies = Counter(
            f"{a['decision']}" + (f":{a['reason']}" if a.get("reason") else "")
            for a in tap.audits
            if a.get("message_id")
        )
        stopped = [c for c, text, _ in self.inbound if "stop" in text.lower()]
        groups = {
            "no_consent": [c.customer_id for c in self.customers if not c.consent],
            "landline": [c.customer_id for c in self.customers if c.phone == LANDLINE],
            "outside_outage": [
                c.customer_id for c in self.customers if c.region not in OUTAGE_REGIONS
            ],
            "stopped": [c.customer_id for c in stopped],
        }
        alerted = {cid for cid, ks in received.items() if "alert" in ks}
        restored_to = {cid for cid, ks in received.items() if "restored" in ks}
        after_stop_ok = all(
            received.get(c.customer_id, [])[-1:] == ["confirmation"] for c in stopped
        )
        checks = {
            "stopped customers got nothing after their confirmation": after_stop_ok,
            "customers without consent got no outage texts": not any(
                k in ("alert", "update", "restored")
                for cid in groups["no_consent"]
                for k in received.get(cid, [])
            ),
            "the landline got nothing": not any(received.get(c) for c in groups["landline"]),
            "restored texts went only to alerted customers": restored_to <= alerted,
            "no sender rate was exceeded": fake.stats()["violation_total"] == 0,
            "every command ended in one terminal status": funnel.total.pending == 0,
        }
        wall = self.elapsed()
        self.say("\n== summary (from sms.audit and sms.delivery-status) ==")
        for line in render_funnel(funnel):
            self.say(line)
        self.say("  customers' texts (sms.audit, by decision):")
        for label, n in sorted(replies.items()):
            self.say(f"    {label:40} {n}")
        self.say(
            f"  provider: {fake.stats()['accepted']} texts accepted, "
            f"{fake.stats()['violation_total']} rate violations; dispatcher: "
            f"{dispatcher.describe()}"
        )
        self.say("\n== as customers saw it (numbers masked) ==")
        shown: list[Customer] = [
            *stopped[:1],
            *(c for c, _, what in self.inbound if what == "status question"),
        ]
        shown += [c for c in self.customers if c.consent and c.language == "es"][:1]
        shown += [c for c, _, what in self.inbound if what.endswith("outside the outage")]
        inbound = {c.customer_id: text for c, text, _ in self.inbound}
        for c in dict.fromkeys(shown):
            self.say(f"  {mask_phone(c.phone)} ({c.region}, {c.language}):")
            convo = texts.get(c.customer_id, [])
            for kind, body in convo:
                if kind in ("confirmation", "reply", "help") and c.customer_id in inbound:
                    self.say(f"    > {inbound.pop(c.customer_id)}")
                self.say(f"    < [{kind}] {body}")
            if c.customer_id in inbound:
                self.say(f"    > {inbound.pop(c.customer_id)}")
        self.say("\n== checks ==")
        for name, ok in checks.items():
            self.say(f"  {'ok  ' if ok else 'FAIL'} {name}")
        self.say(f"\ndemo finished in {wall:.1f}s")
        return {
            "wall_seconds": round(wall, 1),
            "customers": len(self.customers),
            "outage": funnel.to_json(),
            "replies": dict(replies),
            "commands_by_kind": dict(tap.commands),
            "outcomes": dict(tap.outcomes),
            "provider": fake.stats(),
            "received": received,
            "groups": groups,
            "inbound": [[c.customer_id, text] for c, text, _ in self.inbound],
            "checks": checks,
        }


async def _main(config: DemoConfig, out: TextIO) -> dict[str, Any]:
    demo = Demo(config, out)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = cleaning = False

    def interrupt() -> None:
        """Ctrl-C or SIGTERM: cancel, then clean up in the finally below. Cancelled again
        every half second while the demo still runs: Python 3.11's ``asyncio.wait_for``
        swallows a cancellation that lands as what it waits for completes (aiokafka
        connects through it), and the demo then ran to its end (seen once in CI)."""
        nonlocal interrupted
        interrupted = True
        if task is not None and not task.done() and not cleaning:
            task.cancel()
            loop.call_later(0.5, interrupt)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupt)
    try:
        result = await demo.run()
    finally:
        cleaning = True
        await asyncio.to_thread(demo.stop_processes)
    if interrupted:  # the cancellation was swallowed, but the user asked to stop
        raise asyncio.CancelledError
    if config.json_path is not None:
        config.json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def run_demo(config: DemoConfig, out: TextIO = sys.stdout) -> int:
    """Run the demo; 0 when every check holds, 1 when one fails. Stages that stall raise
    :class:`DemoError`."""
    try:
        result = asyncio.run(_main(config, out))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ndemo interrupted; every process it started was stopped", file=out, flush=True)
        return 130
    return 0 if all(result["checks"].values()) else 1
