"""``outage-sms report`` and ``outage-sms plan --region`` against a real broker, through the
CLI: records in the shapes the fan-out, the dispatcher and carrier receipts write them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from outage_sms.admin import ensure_topics
from outage_sms.brokers import free_port
from outage_sms.report import read_topics
from tests.kafka_helpers import produce, settings_env
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

OID = "O-REP-1"


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "outage_sms", *args],
        env={**settings_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def audit(
    oid: str,
    version: int,
    decision: str,
    reason: str | None,
    recipients: list[Any],
    status: str = "detected",
    kind: str = "alert",
    p: int = 0,
) -> tuple[bytes, bytes]:
    facts: dict[str, Any] = {"partition": p, "severity": "service", "status": status}
    if decision == "targeted" and reason is None:
        facts.update(kind=kind, sender="87654")
    facts["recipients"] = recipients
    rec = {
        "schema_version": 1,
        "audit_id": f"{oid}:{version}:p{p}:{decision}:{reason}:{recipients[0][0]}",
        "decision": decision,
        "reason": reason,
        "phone": None,
        "outage_id": oid,
        "outage_version": version,
        "facts": facts,
        "at": f"2026-11-24T10:0{version}:00Z",
    }
    return oid.encode(), orjson.dumps(rec)


def status(
    cid: str,
    phone: str,
    outcome: str,
    oid: str | None = OID,
    version: int = 1,
    reason: str | None = None,
) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "command_id": cid,
        "outcome": outcome,
        "reason": reason,
        "kind": "alert",
        "outage_id": oid,
        "outage_version": version if oid else None,
        "sender": "87654",
        "attempts": 1,
        "at": f"2026-11-24T10:0{version}:30Z",
    }
    return phone.encode(), orjson.dumps(rec)


def phone(i: int) -> str:
    return f"+1212555{i:04d}"


async def test_report_prints_one_outages_funnel_from_the_topics(settings: Settings) -> None:
    await ensure_topics(settings)
    reg = TopicRegistry(settings)
    boot = settings.bootstrap_servers or ""
    cids = [f"{OID}:1:{phone(i)}" for i in range(4)]
    noise = [
        audit("O-OTHER", 1, "targeted", None, [[phone(1000 + i), f"x{i}"] for i in range(100)], p=i)
        for i in range(30)
    ]
    await produce(
        boot,
        reg[Role.AUDIT].name,
        [
            *noise,
            audit(OID, 1, "targeted", None, [[phone(i), cids[i]] for i in range(4)]),
            audit(OID, 1, "suppressed", "no_consent", [[phone(10), None, {"customers": ["C"]}]]),
            audit(OID, 1, "suppressed", "landline", [[phone(11), None, {"line": "fixed_line"}]]),
            audit(OID, 2, "targeted", None, [[phone(0), "u0"]], status="updated", kind="update"),
            audit(
                OID,
                2,
                "suppressed",
                "opted_out",
                [[phone(1), None, {"scope": "sender"}]],
                status="updated",
            ),
        ],
    )
    await produce(
        boot,
        reg[Role.DELIVERY_STATUS].name,
        [
            status(cids[0], phone(0), "sent"),
            status(cids[0], phone(0), "sent"),  # repeated after a crash: counts once
            status(cids[1], phone(1), "sent"),
            status(cids[2], phone(2), "suppressed", reason="opted_out"),
            status(cids[0], phone(0), "delivered", oid=None),  # a receipt, by command id
            status(cids[1], phone(1), "undelivered", oid=None, reason="carrier_undelivered"),
            status("u0", phone(0), "sent", version=2),
            status("x1", phone(1001), "sent", oid="O-OTHER"),
        ],
    )

    done = cli(settings, "report", "--outage", OID, "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    total = report["total"]
    assert total["targeted"] == 5
    assert total["targeted_by_kind"] == {"alert": 4, "update": 1}
    assert total["suppressed_at_fanout"] == {"landline": 1, "no_consent": 1, "opted_out": 1}
    assert total["outcomes"] == {"sent": 3, "suppressed": 1}
    assert total["suppressed_at_send"] == {"opted_out": 1}
    assert (total["delivered"], total["undelivered"]) == (1, 1)
    assert total["pending"] == 1  # cids[3]: no status yet
    assert [v["status"] for v in report["versions"]] == ["detected", "updated"]
    assert report["timeline"][0]["what"].startswith("v1 detected: 4 targeted")

    text = cli(settings, "report", "--outage", OID)
    assert text.returncode == 0, text.stderr
    assert "no_consent 1" in text.stdout and "pending          1" in text.stdout
    assert "+1212" not in text.stdout

    missing = cli(settings, "report", "--outage", "NO-SUCH-OUTAGE")
    assert missing.returncode == 1
    assert "no record of outage 'NO-SUCH-OUTAGE'" in missing.stderr


async def test_report_names_the_fix_for_an_unreachable_broker(settings: Settings) -> None:
    dead = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    done = cli(dead, "report", "--outage", OID)
    assert done.returncode == 2
    assert "cannot reach the Kafka broker" in done.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in done.stderr


async def test_plan_counts_a_regions_customers_on_the_broker(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = TopicRegistry(settings)[Role.CUSTOMER_REGIONS].name

    def customer(i: int, region: str, consent: bool = True, number: str | None = None) -> Any:
        cid = f"C{i}"
        rec = {
            "schema_version": 1,
            "customer_id": cid,
            "phone": number or phone(i),
            "regions": [region],
            "sms_consent": consent,
        }
        return cid.encode(), orjson.dumps(rec)

    await produce(
        settings.bootstrap_servers or "",
        topic,
        [
            *(customer(i, "NORTH") for i in range(40)),
            *(customer(100 + i, "NORTH", consent=False) for i in range(5)),
            customer(200, "NORTH", number="+442079460123"),
            *(customer(300 + i, "SOUTH") for i in range(7)),
            (b"C0", None),  # deleted
        ],
    )
    senders = '[{"id": "87654", "type": "short_code", "rate": 13, "countries": ["US"]}]'
    done = cli(settings, "plan", "--region", "NORTH", "--senders", senders, "--json")
    assert done.returncode == 0, done.stderr
    plan = orjson.loads(done.stdout)
    assert plan["region"] == {"name": "NORTH", "customers": 45, "no_consent": 5, "not_textable": 1}
    assert plan["recipients"] == {"US": 39}
    assert plan["senders"][0]["recipients"] == 39

    unknown = cli(settings, "plan", "--region", "NOWHERE")
    assert unknown.returncode == 2
    assert "no customer in region 'NOWHERE'" in unknown.stderr


async def test_reading_to_the_end_includes_every_record_of_a_last_batch_of_several(
    settings: Settings,
) -> None:
    """Tansu's end offset stops after the first record of a partition's last batch; the
    report must still read every record (the dispatcher and fan-out write batches)."""
    await ensure_topics(settings)
    topic = TopicRegistry(settings)[Role.DELIVERY_STATUS].name
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(5):
            batch.append(key=b"+14155550100", value=b'{"n":%d}' % i, timestamp=None)
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    seen: list[bytes | None] = []
    read = await read_topics(
        settings.bootstrap_servers or "", [topic], lambda _t, _k, v: seen.append(v), timeout=60
    )
    print(f"read {read} of the 5 records in one batch")
    assert read == 5 and seen == [b'{"n":%d}' % i for i in range(5)]
