"""The dispatcher on a real broker, sending to the fake Genesys over TCP: rates, faults,
send-time opt-outs and staleness, duplicates and restarts. Counts are checked at the fake
provider (what customers would receive) and on sms.delivery-status (what analytics see)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from outage_sms.admin import ensure_topics
from outage_sms.brokers import terminate
from outage_sms.fake_provider import FakeConfig, FakeProvider
from streams.genesys import GenesysClient, GenesysConfig, make_http_client
from streams.provider import OutboundMessage, ProviderResult
from tests.kafka_helpers import TopicReader, WorkerProcess, free_port, produce, settings_env
from topology.dispatcher import Dispatcher
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

SLOW = "+14155550100"  # a long code at 4 msg/s
FAST = "87654"  # a short code at 50 msg/s
POOL = orjson.dumps(
    [
        {"id": SLOW, "type": "long_code", "rate": 4, "countries": ["US"]},
        {"id": FAST, "type": "short_code", "rate": 50, "countries": ["US"]},
    ]
).decode()
RATE_SHARE = 0.9
_n = itertools.count()


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def command(
    to: str,
    sender: str = FAST,
    *,
    cid: str | None = None,
    kind: str = "alert",
    outage: tuple[str, int] | None = ("O1", 1),
    **over: Any,
) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    rec: dict[str, Any] = {
        "schema_version": 1,
        "command_id": cid or f"c{next(_n)}:{to}",
        "kind": kind,
        "outage_id": outage[0] if outage else None,
        "outage_version": outage[1] if outage else None,
        "from": sender,
        "to": to,
        "body": "Outage Alerts: power out in your area. Reply STOP to opt out",
        "encoding": "gsm7",
        "segments": 1,
        "created_at": now.isoformat(),
        "expires_at": (now + timedelta(hours=1)).isoformat(),
    }
    rec.update(over)
    return to.encode(), orjson.dumps(rec)


def cid_of(record: tuple[bytes, bytes]) -> str:
    return str(orjson.loads(record[1])["command_id"])


class Rig:
    """Broker topics, the fake provider, and dispatchers started on demand."""

    def __init__(self, settings: Settings, fake: FakeProvider, stack: AsyncExitStack) -> None:
        self.settings = settings
        self.fake = fake
        self.stack = stack
        self.reg = TopicRegistry(settings)
        self.dispatchers: list[Dispatcher] = []

    async def dispatcher(self, timeout: httpx.Timeout | None = None, **over: Any) -> Dispatcher:
        http: httpx.AsyncClient = await self.stack.enter_async_context(make_http_client(timeout))
        config = GenesysConfig(
            client_id="fake-client",
            client_secret="fake-secret",  # noqa: S106 (the fake's test credential)
            api_base_url=self.fake.url,
            login_base_url=self.fake.url,
        )
        settings = self.settings.model_copy(update=over)
        d = Dispatcher(settings, GenesysClient(http, config))
        await d.start()
        self.dispatchers.append(d)
        return d

    async def commands(self, records: list[tuple[bytes, bytes]]) -> None:
        await produce(
            self.settings.bootstrap_servers or "", self.reg[Role.SEND_COMMANDS].name, records
        )

    async def changelog(self, role: Role, key: str, value: Any) -> None:
        """Write a Faust table entry as the worker would (JSON key and value)."""
        await produce(
            self.settings.bootstrap_servers or "",
            self.reg[role].name,
            [(orjson.dumps(key), orjson.dumps(value))],
        )


@pytest.fixture
async def rig(settings: Settings) -> AsyncIterator[Rig]:
    # The fake stamps a request when its handler runs, in this test's own busy event loop:
    # under CI load two requests paced 0.26 s apart can be handled 0.2 s apart. So the
    # fake forgives 0.1 s of bunching and the dispatcher paces at 90%; what the tests
    # prove is ownership (no sender ever driven by two owners, i.e. at twice its rate).
    settings = settings.model_copy(
        update={
            "senders": POOL,
            "client_requests_per_minute": 100_000,
            "sender_rate_share": RATE_SHARE,
        }
    )
    await ensure_topics(settings)
    fake = FakeProvider(FakeConfig(senders={SLOW: 4.0, FAST: 50.0}, client_limit=None, jitter=0.1))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(fake)
        r = Rig(settings, fake, stack)
        try:
            yield r
        finally:
            for d in r.dispatchers:
                await d.stop()


def statuses(reader: TopicReader) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in reader.json_values():
        out.setdefault(s["command_id"], []).append(s)
    return out


def sent_to(fake: FakeProvider) -> Counter[str]:
    return Counter(m.to for m in fake.messages)


async def test_each_command_is_sent_once_at_its_senders_rate(rig: Rig, read: Reader) -> None:
    fast = [command(phone(i), FAST) for i in range(40)]
    slow = [command(phone(100 + i), SLOW) for i in range(8)]
    dup = fast[3]  # a replayed record of the same command
    await rig.commands([*slow, *fast, dup])
    d = await rig.dispatcher()
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) == 48, what="48 terminal statuses")

    got = statuses(status)
    assert all(len(v) == 1 for v in got.values()), "one terminal status per command"
    assert {v[0]["outcome"] for v in got.values()} == {"sent"}
    assert sent_to(rig.fake) == Counter({phone(i): 1 for i in [*range(40), *range(100, 108)]})
    assert rig.fake.stats()["violation_total"] == 0
    assert d.counts["duplicates"] == 1
    metrics = d.metrics()
    assert 'outage_sms_dispatch_commands_total{outcome="sent",reason=""} 48' in metrics
    assert "outage_sms_dispatch_duplicates_total 1" in metrics
    assert f'outage_sms_dispatch_queue_depth{{sender="{SLOW}"}} 0' in metrics
    # The slow sender did not hold the fast one back: all 40 fast texts went before the
    # last slow one (8 at 4/s take about 2 s; 40 at 50/s under 1 s).
    order = [m.from_ for m in rig.fake.messages]
    last_slow = max(i for i, f in enumerate(order) if f == SLOW)
    assert order[:last_slow].count(FAST) == 40
    print(f"checked: 48 commands, 48 statuses, {len(rig.fake.messages)} texts, 0 violations")


async def test_a_stop_or_a_resolution_stops_queued_texts(rig: Rig, read: Reader) -> None:
    """Commands created before a STOP (or before the outage resolved) are not sent."""
    await rig.changelog(
        Role.OUTAGES_CHANGELOG, "O1", {"outage_id": "O1", "version": 1, "status": "detected"}
    )
    d = await rig.dispatcher()
    queued = [command(phone(i), SLOW) for i in range(12)]  # 3 s of backlog at 4/s
    await rig.commands(queued)
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) >= 2, what="the first texts")
    # The last in the sender's queue (the router interleaves the command partitions).
    last = d.queue_of(SLOW)[-1]
    stopped = last.to
    await rig.changelog(
        Role.OPTOUTS_CHANGELOG,
        stopped,
        {"p": phone_partition(stopped.encode(), 4), "all": False, "senders": [SLOW]},
    )
    await status.until(lambda r: len(statuses(r)) == 12, what="12 terminal statuses")
    got = {cid: v[0] for cid, v in statuses(status).items()}
    assert (got[last.command_id]["outcome"], got[last.command_id]["reason"]) == (
        "suppressed",
        "opted_out",
    )
    assert stopped not in sent_to(rig.fake)

    later = [command(phone(200 + i), SLOW) for i in range(8)]
    await rig.commands(later)
    await status.until(lambda r: sum(1 for c in map(cid_of, later) if c in statuses(r)) >= 2)
    await rig.changelog(
        Role.OUTAGES_CHANGELOG, "O1", {"outage_id": "O1", "version": 2, "status": "resolved"}
    )
    await status.until(lambda r: all(cid_of(c) in statuses(r) for c in later), what="later")
    outcomes = Counter(
        (statuses(status)[cid_of(c)][0]["outcome"], statuses(status)[cid_of(c)][0]["reason"])
        for c in later
    )
    assert outcomes[("suppressed", "stale")] >= 1
    assert outcomes[("sent", None)] >= 2
    assert sum(outcomes.values()) == 8
    print(f"checked: opt-out at send time, stale after resolution {dict(outcomes)}; {d.describe()}")


async def test_an_alert_that_ends_unsent_hands_on_its_opt_out_footer_and_no_restored_follows(
    rig: Rig, read: Reader
) -> None:
    """The fan-out put "Reply STOP" on an alert and sends "restored" to those it alerted;
    when the dispatcher suppresses that alert, the next text takes the footer and no
    "restored" goes, also after the dispatcher is replaced (the ledger keeps both)."""
    footer = " Reply STOP to opt out."
    superseded, resolved = phone(300), phone(301)
    outages = Role.OUTAGES_CHANGELOG
    await rig.changelog(outages, "O1", {"outage_id": "O1", "version": 2, "status": "detected"})
    await rig.changelog(outages, "O2", {"outage_id": "O2", "version": 2, "status": "resolved"})
    alert = "Acme: Outage in your area. Est. restore 3:00 PM." + footer
    alerts = [
        command(superseded, outage=("O1", 1), body=alert),
        command(resolved, outage=("O2", 1), body=alert),
    ]
    first = await rig.dispatcher()
    await rig.commands(alerts)
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: all(cid_of(c) in statuses(r) for c in alerts), what="alerts")
    await first.stop()
    rig.dispatchers.remove(first)

    later = [
        command(superseded, kind="update", outage=("O1", 2), body="Acme update: Est. 5:00 PM."),
        command(
            resolved,
            kind="restored",
            outage=("O2", 2),
            body="Acme: Service has been restored in your area.",
        ),
    ]
    await rig.commands(later)
    await rig.dispatcher()
    await status.until(lambda r: all(cid_of(c) in statuses(r) for c in later), what="later")

    got = {cid: v[0] for cid, v in statuses(status).items()}
    outcome = [(got[cid_of(c)]["outcome"], got[cid_of(c)]["reason"]) for c in [*alerts, *later]]
    assert outcome == [
        ("suppressed", "stale"),
        ("suppressed", "stale"),
        ("sent", None),
        ("suppressed", "not_alerted"),
    ]
    texts = [(m.to, m.text) for m in rig.fake.messages]
    assert texts == [(superseded, "Acme update: Est. 5:00 PM." + footer)]
    assert got[cid_of(later[0])]["segments"] == 1
    print(f"checked: {outcome}; the one text sent carries the footer: {texts[0][1]!r}")


async def test_a_text_that_overtakes_the_deferred_first_text_carries_its_footer(
    rig: Rig, read: Reader
) -> None:
    """The alert with "Reply STOP" waits for the morning; a life-safety update for the same
    number goes now and is the first text the customer reads: it carries the footer."""
    footer = " Reply STOP to opt out."
    number = phone(310)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    alert = command(
        number,
        outage=("O3", 1),
        body="Acme: Outage in your area." + footer,
        not_before=later,
        expires_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat(),
    )
    update = command(number, kind="update", outage=("O3", 2), body="Acme update: life safety.")
    await rig.dispatcher()
    await rig.commands([alert, update])
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: cid_of(update) in statuses(r), what="the update's status")
    assert [(m.to, m.text) for m in rig.fake.messages] == [
        (number, "Acme update: life safety." + footer)
    ]
    assert cid_of(alert) not in statuses(status), "the alert still waits for the morning"
    print("checked: the overtaking update carried the footer; the alert still deferred")


async def test_provider_faults_end_in_one_terminal_status_each(rig: Rig, read: Reader) -> None:
    bad = phone(7)
    rig.fake.faults.throttle = 5
    rig.fake.faults.retry_after = 0.2
    rig.fake.faults.server_errors = 4
    rig.fake.faults.reject_numbers = {bad: "invalid.recipient"}
    cmds = [command(phone(i), FAST) for i in range(20)]
    await rig.commands(cmds)
    await rig.dispatcher()
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) == 20, what="20 terminal statuses")
    got = statuses(status)
    assert all(len(v) == 1 for v in got.values())
    bad_status = got[cid_of(cmds[7])][0]
    assert (bad_status["outcome"], bad_status["reason"]) == ("failed", "rejected")
    assert {v[0]["outcome"] for c, v in got.items() if c != cid_of(cmds[7])} == {"sent"}
    assert sent_to(rig.fake) == Counter({phone(i): 1 for i in range(20) if i != 7})
    retried = sum(v[0]["attempts"] > 1 for v in got.values())
    assert retried >= 1
    print(f"checked: 20 statuses after 5x429, 4x5xx, 1x400; {retried} needed retries")


async def test_quiet_hours_wait_expired_expire_and_a_timeout_is_not_retried(
    rig: Rig, read: Reader
) -> None:
    now = datetime.now(UTC)
    later = command(phone(1), FAST, not_before=(now + timedelta(seconds=2)).isoformat())
    gone = command(phone(2), FAST, expires_at=(now - timedelta(seconds=1)).isoformat())
    slow = command(phone(3), FAST)
    rig.fake.faults.slow = 1
    rig.fake.faults.slow_seconds = 3.0
    await rig.commands([slow])
    await rig.dispatcher(timeout=httpx.Timeout(1.0))
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: cid_of(slow) in statuses(r), what="the timed-out command")
    await rig.commands([later, gone])
    await status.until(lambda r: len(statuses(r)) == 3, what="3 terminal statuses")
    got = {c: v[0] for c, v in statuses(status).items()}
    # The request may have reached the provider: at most once, so no retry.
    assert (got[cid_of(slow)]["outcome"], got[cid_of(slow)]["reason"]) == (
        "failed",
        "outcome_unknown",
    )
    assert got[cid_of(gone)]["outcome"] == "expired"
    assert got[cid_of(later)]["outcome"] == "sent"
    assert [m.to for m in rig.fake.messages if m.to == phone(1)] == [phone(1)]
    sent_at = datetime.fromisoformat(got[cid_of(later)]["at"])
    assert sent_at >= now + timedelta(seconds=2), "not before its not_before"
    assert sum(1 for r in rig.fake.requests if r.to == phone(3)) == 1
    print("checked: deferred until not_before, expired at its turn, a timeout not retried")


async def test_a_restart_mid_backlog_sends_nothing_twice(rig: Rig, read: Reader) -> None:
    cmds = [command(phone(i), SLOW) for i in range(16)]  # 4 s at 4/s
    await rig.commands(cmds)
    first = await rig.dispatcher()
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) >= 4, what="a few texts")
    await first.stop()
    rig.dispatchers.remove(first)
    sent_before = len(rig.fake.messages)
    assert sent_before < 16
    # The ledger and the committed offsets carry over; replayed commands are duplicates.
    await rig.commands(cmds[:4])
    await rig.dispatcher()
    await status.until(lambda r: len(statuses(r)) == 16, what="16 terminal statuses")
    await status.catch_up()
    assert all(len(v) == 1 for v in statuses(status).values())
    assert sent_to(rig.fake) == Counter({phone(i): 1 for i in range(16)})
    assert rig.fake.stats()["violation_total"] == 0
    print(f"checked: {sent_before} sent before the restart, 16 after, each once")


async def test_two_dispatchers_share_the_senders_without_exceeding_a_rate(
    rig: Rig, read: Reader
) -> None:
    a = await rig.dispatcher()
    b = await rig.dispatcher()
    cmds = [command(phone(i), FAST if i % 4 else SLOW) for i in range(80)]
    await rig.commands(cmds)
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) == 80, what="80 terminal statuses")
    assert all(len(v) == 1 for v in statuses(status).values())
    assert sent_to(rig.fake) == Counter({phone(i): 1 for i in range(80)})
    assert rig.fake.stats()["violation_total"] == 0
    print(f"checked: 80 sent once over two dispatchers; a: {a.describe()} b: {b.describe()}")


async def test_kill_9_mid_backlog_sends_nobody_two_texts(
    rig: Rig, read: Reader, tmp_path: Path
) -> None:
    """A dispatcher process killed without warning: on restart nothing is sent twice, and
    the one request that may have been in flight ends as ``failed: outcome_unknown``."""
    env = {
        **settings_env(rig.settings),
        "OUTAGE_SMS_SENDERS": POOL,
        "OUTAGE_SMS_CLIENT_REQUESTS_PER_MINUTE": "100000",
        "OUTAGE_SMS_SENDER_RATE_SHARE": str(RATE_SHARE),
        "OUTAGE_SMS_GENESYS_CLIENT_ID": "fake-client",
        "OUTAGE_SMS_GENESYS_CLIENT_SECRET": "fake-secret",
        "OUTAGE_SMS_GENESYS_API_URL": rig.fake.url,
        "OUTAGE_SMS_DISPATCH_METRICS_PORT": str(port := free_port()),
    }
    log = tmp_path / "dispatcher.log"

    def spawn() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "outage_sms", "dispatcher"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    cmds = [command(phone(i), SLOW) for i in range(16)]  # 4 s at 4/s
    await rig.commands(cmds)
    proc = spawn()
    try:
        deadline = time.monotonic() + 60
        while len(rig.fake.messages) < 5:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as ops:
            health = (await ops.get("/health")).json()
            metrics = (await ops.get("/metrics")).text
        assert health["status"] == "ok" and health["owned_partitions"] == [0, 1, 2, 3]
        assert f'outage_sms_dispatch_queue_depth{{sender="{SLOW}"}}' in metrics
        proc.kill()
        proc.wait(timeout=10)
        before = len(rig.fake.messages)
        proc = spawn()
        status = read(Role.DELIVERY_STATUS)
        await status.until(lambda r: len(statuses(r)) == 16, what="16 terminal statuses")
        await status.catch_up()
    finally:
        terminate(proc, grace=30)
    got = statuses(status)
    # A status is repeated only if the kill fell between its ack and the ledger's "done";
    # a repeat is byte-identical, never a second, different outcome.
    repeats = sum(len(v) - 1 for v in got.values())
    assert all(v.count(v[0]) == len(v) for v in got.values()), "no contradicting statuses"
    assert repeats <= 1
    outcomes = Counter((v[0]["outcome"], v[0]["reason"]) for v in got.values())
    assert set(outcomes) <= {("sent", None), ("failed", "outcome_unknown")}
    assert outcomes[("failed", "outcome_unknown")] <= 1
    texts = sent_to(rig.fake)
    assert max(texts.values()) == 1, "nobody got two texts"
    sent = {orjson.loads(c[1])["to"] for c in cmds if got[cid_of(c)][0]["outcome"] == "sent"}
    assert sent <= set(texts)
    assert rig.fake.stats()["violation_total"] == 0
    print(
        f"checked: killed after {before} texts; {dict(outcomes)}; {len(texts)} numbers "
        f"texted once each; {repeats} identical status repeats"
    )


async def test_a_stop_texted_while_the_alert_queues_stops_it_end_to_end(
    rig: Rig, read: Reader, tmp_path: Path
) -> None:
    """Worker and dispatcher together: the customer last in a long code's queue texts
    STOP; the replies agent records it, the dispatcher's view sees it, the queued alert
    is suppressed, and the STOP confirmation (exempt from the opt-out) is the one text."""
    pool = orjson.dumps([{"id": SLOW, "type": "long_code", "rate": 4, "countries": ["US"]}])
    settings = rig.settings.model_copy(update={"senders": pool.decode()})
    worker = WorkerProcess(
        settings,
        tmp_path / "worker.log",
        env={"OUTAGE_SMS_LOG_LEVEL": "INFO", "OUTAGE_SMS_SENDERS": pool.decode()},
    ).start()
    try:
        await worker.log_contains("Worker ready")
        d = await rig.dispatcher(senders=pool.decode())
        bs = settings.bootstrap_servers or ""
        customers = [
            (
                f"C{i}".encode(),
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "customer_id": f"C{i}",
                        "phone": phone(i),
                        "regions": ["R1"],
                        "sms_consent": True,
                        "language": "en",
                        "timezone": "America/Los_Angeles",
                    }
                ),
            )
            for i in range(24)
        ]
        await produce(bs, rig.reg[Role.CUSTOMER_REGIONS].name, customers)
        await read(Role.SUBSCRIBERS_CHANGELOG).until(
            lambda r: len({k for k, _ in r.records}) == 24, what="24 subscribers"
        )
        now = datetime.now(UTC)
        outage = {
            "schema_version": 1,
            "outage_id": "O1",
            "version": 1,
            "status": "detected",
            "severity": "service",
            "regions": ["R1"],
            "summary": "Storm damage on Main St",
            "eta": (now + timedelta(hours=3)).isoformat(),
            "status_url": "https://status.example.com/o/1",
            "occurred_at": now.isoformat(),
        }
        await produce(bs, rig.reg[Role.OUTAGE_EVENTS].name, [(b"O1", orjson.dumps(outage))])
        deadline = time.monotonic() + 60
        while not rig.fake.messages or len(d.queue_of(SLOW)) < 10:
            assert time.monotonic() < deadline, d.describe()
            await asyncio.sleep(0.02)
        last = d.queue_of(SLOW)[-1]
        stop = {
            "schema_version": 1,
            "message_id": "in-stop-1",
            "from": last.to,
            "to": SLOW,
            "body": "STOP",
            "received_at": datetime.now(UTC).isoformat(),
        }
        await produce(bs, rig.reg[Role.INBOUND].name, [(last.to.encode(), orjson.dumps(stop))])
        status = read(Role.DELIVERY_STATUS)
        await status.until(
            lambda r: len(statuses(r)) == 25, timeout=90, what="24 alerts and 1 confirmation"
        )
    finally:
        worker.stop_cleanly()
    got = statuses(status)
    alert = got[last.command_id][0]
    assert (alert["outcome"], alert["reason"]) == ("suppressed", "opted_out")
    to_last = [m.text for m in rig.fake.messages if m.to == last.to]
    assert len(to_last) == 1 and "unsubscribed" in to_last[0], to_last
    assert sent_to(rig.fake) == Counter({phone(i): 1 for i in range(24)})
    delays = sorted(d.optouts.delays)
    print(
        f"checked: 23 alerts sent, the STOP-ed alert suppressed, 1 confirmation; "
        f"opt-out reached the dispatcher {delays[-1] * 1000:.0f} ms after it was written"
    )


async def test_provider_fault_storms_end_with_every_command_in_one_terminal_state(
    rig: Rig, read: Reader
) -> None:
    """429 and 5xx storms and slow answers across 300 commands: every command ends in
    one terminal status, nobody is texted twice, and no sender exceeds its rate."""
    rig.fake.faults.throttle = 40
    rig.fake.faults.retry_after = 0.2
    rig.fake.faults.server_errors = 60
    rig.fake.faults.slow = 5
    rig.fake.faults.slow_seconds = 2.0
    cmds = [command(phone(i), FAST if i % 10 else SLOW) for i in range(300)]
    await rig.commands(cmds)
    await rig.dispatcher(timeout=httpx.Timeout(1.0))
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: len(statuses(r)) == 300, timeout=120, what="300 statuses")
    await status.catch_up()
    got = statuses(status)
    assert all(len(v) == 1 for v in got.values())
    outcomes = Counter((v[0]["outcome"], v[0]["reason"]) for v in got.values())
    # Slow answers time out: the text may have gone, so they are not retried.
    assert outcomes[("failed", "outcome_unknown")] == 5
    assert outcomes[("sent", None)] == 295
    texts = sent_to(rig.fake)
    assert max(texts.values()) == 1, "nobody texted twice"
    assert len(texts) == 300  # the 5 slow ones did reach the provider
    assert rig.fake.stats()["violation_total"] == 0
    retried = sum(v[0]["attempts"] > 1 for v in got.values())
    print(
        f"checked: 300 commands through 40x429, 60x5xx, 5 timeouts: {dict(outcomes)}, "
        f"{retried} retried, 0 violations"
    )


class _Broken:
    """A provider with a bug: it raises instead of returning a result."""

    name = "broken"

    async def send(self, message: OutboundMessage) -> ProviderResult:
        raise RuntimeError("provider bug")


async def test_a_provider_that_raises_ends_the_command_as_outcome_unknown(
    rig: Rig, read: Reader
) -> None:
    """Not a stranded command (and a stalled commit), not a blind retry: the request may
    have left before the exception."""
    cmd = command(phone(1), FAST)
    await rig.commands([cmd])
    d = Dispatcher(rig.settings, _Broken())
    await d.start()
    rig.dispatchers.append(d)
    status = read(Role.DELIVERY_STATUS)
    await status.until(lambda r: cid_of(cmd) in statuses(r), what="the command's status")
    [got] = statuses(status)[cid_of(cmd)]
    assert (got["outcome"], got["reason"], got["attempts"]) == ("failed", "outcome_unknown", 1)
    print("checked: a raising provider ends the command failed: outcome_unknown, once")
