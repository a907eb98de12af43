"""The worker's web endpoints on a real broker over real HTTP: the status Data Action
(after an outage, after resolution, routed to the worker owning the number), inbound
and receipt ingress end to end, authentication, oversized and malformed bodies."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from twilio.request_validator import RequestValidator

from outage_sms.admin import ensure_topics
from tests import builders
from tests.builders import NOON_LA, SHORT, customer
from tests.kafka_helpers import TopicReader, WorkerProcess, end_offsets, free_port, produce
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition
from topology.web import ANSWERED_BY

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

A = "+14155550111"  # customer in R1
B = "+14155550112"  # customer in R2
STRANGER = "+14155550199"
SECRET = "test-shared-secret"  # noqa: S105
TOKEN = "twilio-test-auth-token-0123456789"  # noqa: S105
USER, PASSWORD = "genesys", "basic-pass"
KEY = {"X-Outage-Sms-Key": SECRET}


def outage(oid: str, version: int, **over: Any) -> tuple[bytes, bytes]:
    """An outage whose ETA never passes: the status answers stay "ongoing"."""
    return builders.outage(oid, version, **{"eta": "2099-11-24T23:30:00Z", **over})


class Worker:
    """A worker process with its web server on a port of its own."""

    def __init__(self, proc: WorkerProcess, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    async def ready(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(self.url + "/ready", headers=KEY)
        return dict(r.json())


@pytest.fixture
async def workers(settings: Settings) -> AsyncIterator[list[Worker]]:
    await ensure_topics(settings)
    made: list[Worker] = []
    yield made
    for w in made:
        if w.proc.proc is not None and w.proc.proc.poll() is None:
            w.proc.stop_cleanly()


async def start(settings: Settings, tmp_path: Path, workers: list[Worker], **env: str) -> Worker:
    """A web-enabled worker, once it says "Worker ready" (records produced while a worker
    recovers its tables can be lost by faust-streaming 0.15.3)."""
    port = free_port()
    full = {
        "OUTAGE_SMS_LOG_LEVEL": "INFO",
        "OUTAGE_SMS_WEB_ENABLED": "true",
        "OUTAGE_SMS_WEB_PORT": str(port),
        "OUTAGE_SMS_WEB_HOST": "127.0.0.1",
        "OUTAGE_SMS_WEB_SECRET": SECRET,
        "OUTAGE_SMS_WEB_BASIC_USER": USER,
        "OUTAGE_SMS_WEB_BASIC_PASSWORD": PASSWORD,
        "OUTAGE_SMS_TWILIO_AUTH_TOKEN": TOKEN,
        "OUTAGE_SMS_WEB_MAX_BODY_BYTES": "4096",
        "OUTAGE_SMS_WEB_RECEIPT_LINK_WAIT_SECONDS": "0.5",
        **env,
    }
    log = tmp_path / f"worker{len(workers)}.log"
    proc = WorkerProcess(settings, log, env=full).start()
    w = Worker(proc, port)
    workers.append(w)
    await proc.log_contains("Worker ready")
    return w


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Await ``check()`` returning something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def status(url: str, phone: str, sender: str | None = SHORT) -> httpx.Response:
    body = {"phone": phone, **({"sender": sender} if sender else {})}
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.post(url + "/v1/status", json=body, headers=KEY)


def commands_to(reader: TopicReader, phone: str) -> list[dict[str, Any]]:
    return [c for c in reader.json_values() if c["to"] == phone]


async def subscribe(settings: Settings, read: Reader, *records: tuple[bytes, bytes]) -> None:
    reg = TopicRegistry(settings)
    await produce(settings.bootstrap_servers or "", reg[Role.CUSTOMER_REGIONS].name, records)
    want = {orjson.loads(r[1])["phone"] for r in records}
    await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: {orjson.loads(k) for k, _ in r.records} >= want, what="subscribers"
    )


def twilio_post(url: str, fields: dict[str, str], token: str = TOKEN) -> dict[str, Any]:
    """Keyword arguments of an httpx POST that Twilio would send, signed by Twilio's SDK."""
    signature = RequestValidator(token).compute_signature(url, fields)
    return {
        "url": url,
        "content": urlencode(fields).encode(),
        "headers": {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    }


async def test_status_lookup_after_an_outage_and_after_resolution(
    settings: Settings, tmp_path: Path, workers: list[Worker], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    w = await start(settings, tmp_path, workers)
    await subscribe(settings, read, customer("CA", A, ["R1"]), customer("CB", B, ["R2"]))

    before = (await status(w.url, A)).json()
    assert before["status"] == "no_outage" and before["known_customer"] is True

    commands = read(Role.SEND_COMMANDS)
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O1", 1)])
    await commands.until(lambda r: len(commands_to(r, A)) == 1, what="A's alert")

    r = await status(w.url, A)
    assert r.status_code == 200 and r.headers[ANSWERED_BY] == w.url
    body = r.json()
    assert body["status"] == "ongoing" and body["outage_ids"] == ["O1"]
    assert body["eta_utc"] == "2099-11-24T23:30:00Z"
    assert body["eta_local_iso"] == "2099-11-24T15:30:00-08:00"
    assert body["eta_local"].endswith("3:30 PM") and body["timezone"] == "America/Los_Angeles"
    assert body["status_url"] == "https://status.example.com/o/1"
    assert "Outage in your area" in body["reply_text"] and body["opted_out"] is False

    other = (await status(w.url, B)).json()
    assert other["status"] == "no_outage" and other["outage_ids"] == []
    generic = (await status(w.url, STRANGER)).json()
    assert generic["status"] == "unknown_number" and "no account" in generic["reply_text"]
    leaked = orjson.dumps(generic).decode()
    assert "O1" not in leaked and "status.example" not in leaked and "2099" not in leaked

    # Counted once the fan-out's summary is on the broker, a moment after A's command.
    async with httpx.AsyncClient(base_url=w.url) as ops:
        assert (await ops.get("/metrics")).status_code == 401

        async def counted() -> str | None:
            text = (await ops.get("/metrics", headers=KEY)).text
            return text if 'decisions_total{decision="targeted:-"} 1' in text else None

        metrics = await until(counted, "A's alert counted in /metrics")
    assert f'outage_sms_consumer_lag{{topic="{reg[Role.OUTAGE_EVENTS].name}"' in metrics

    await produce(
        bs,
        reg[Role.OUTAGE_EVENTS].name,
        [outage("O1", 2, status="resolved", occurred_at="2026-11-24T20:30:00Z")],
    )

    async def restored() -> dict[str, Any] | None:
        got = (await status(w.url, A, sender=None)).json()
        return dict(got) if got["status"] != "ongoing" else None

    after = await until(restored, "the resolution to reach the status answer")
    # Restored for OUTAGE_SMS_STATUS_RESTORED_HOURS after resolution (event time 2026):
    # by the wall clock that is long past, so the answer is "no outage" now.
    assert after["status"] in ("restored", "no_outage")
    assert after["eta_utc"] == "" and after["status_url"] == "" and after["outage_count"] == 0


async def test_inbound_ingress_end_to_end_and_opt_out_in_the_answer(
    settings: Settings, tmp_path: Path, workers: list[Worker], read: Reader
) -> None:
    w = await start(settings, tmp_path, workers)
    await subscribe(settings, read, customer("CA", A, ["R1"]))
    inbound = read(Role.INBOUND)

    # Genesys Data Action form, HTTP Basic credentials.
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    stop = {"message_id": "gen-1", "from": A, "to": SHORT, "body": "STOP"}
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(w.url + "/v1/inbound", json=stop, headers={"Authorization": auth})
    assert r.status_code == 202, r.text
    # Twilio form, signed with Twilio's SDK.
    url = w.url + "/v1/inbound/twilio"
    fields = {"MessageSid": "SM-in-1", "From": B, "To": SHORT, "Body": "status", "NumMedia": "0"}
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(**twilio_post(url, fields))
    assert r.status_code == 200 and "<Response>" in r.text

    await inbound.until(lambda r: len(r.records) == 2, what="both texts on sms.inbound")
    by_id = {
        orjson.loads(v or b"")["message_id"]: (k, orjson.loads(v or b""), p)
        for (k, v), p in zip(inbound.records, inbound.partitions, strict=True)
    }
    key, value, partition = by_id["gen-1"]
    assert key == A.encode() and value["body"] == "STOP"
    assert partition == phone_partition(A.encode(), settings.partitions)
    key, value, partition = by_id["SM-in-1"]
    assert key == B.encode() and value["from"] == B and value["message_id"] == "SM-in-1"
    assert partition == phone_partition(B.encode(), settings.partitions)

    # The replies agent took the STOP: the status answer now says opted out.
    await read(Role.OPTOUTS_CHANGELOG).until(lambda r: A in r.table(), what="A's opt-out")
    answer = (await status(w.url, A)).json()
    assert answer["opted_out"] is True and answer["known_customer"] is True
    assert (await status(w.url, A, sender="+14155550100")).json()["opted_out"] is False


async def test_receipts_are_linked_to_the_command(
    settings: Settings, tmp_path: Path, workers: list[Worker], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    w = await start(settings, tmp_path, workers)
    statuses, audit = read(Role.DELIVERY_STATUS), read(Role.AUDIT)

    # What the dispatcher publishes when the provider accepted a command.
    def sent(command: str, pmid: str) -> tuple[bytes, bytes]:
        rec = {
            "schema_version": 1,
            "command_id": command,
            "outcome": "sent",
            "kind": "alert",
            "outage_id": "O1",
            "outage_version": 1,
            "sender": SHORT,
            "provider": "twilio",
            "provider_message_id": pmid,
            "at": NOON_LA,
        }
        return A.encode(), orjson.dumps(rec)

    await produce(bs, reg[Role.DELIVERY_STATUS].name, [sent("cmd-1", "SM1"), sent("cmd-2", "g-2")])
    await read(Role.RECEIPT_LINKS_CHANGELOG).until(
        lambda r: len((r.table().get(A) or {}).get("m", {})) == 2, what="links"
    )

    url = w.url + "/v1/receipts/twilio"
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": A, "From": SHORT}
    progress = {"MessageSid": "SM1", "MessageStatus": "sent", "To": A, "From": SHORT}
    echoed_url = url + "?command_id=cmd-echo"
    echoed = {"MessageSid": "SM9", "MessageStatus": "failed", "To": A, "ErrorCode": "30003"}
    generic = {
        "provider": "genesys",
        "provider_message_id": "g-2",
        "to": A,
        "status": "undelivered",
        "error_code": 4012,
        "error": "carrier blocked",
    }
    unlinked = {**generic, "provider_message_id": "g-unknown"}
    async with httpx.AsyncClient(timeout=10) as c:
        r1 = await c.post(**twilio_post(url, delivered))
        r0 = await c.post(**twilio_post(url, progress))
        r2 = await c.post(**twilio_post(echoed_url, echoed))
        r3 = await c.post(w.url + "/v1/receipts", json=generic, headers=KEY)
        r4 = await c.post(w.url + "/v1/receipts", json=unlinked, headers=KEY)
    assert (r1.status_code, r1.json()["command_id"]) == (202, "cmd-1")
    assert r0.status_code == 200 and r0.json()["final"] is False
    assert (r2.status_code, r2.json()["command_id"]) == (202, "cmd-echo")
    assert (r3.status_code, r3.json()["command_id"]) == (202, "cmd-2")
    assert r4.status_code == 202 and r4.json()["linked"] is False

    await statuses.until(lambda r: len(r.records) == 5, what="three receipts published")
    receipts = {v["command_id"]: v for v in statuses.json_values()[2:]}
    assert receipts["cmd-1"]["outcome"] == "delivered" and receipts["cmd-1"]["outage_id"] == "O1"
    assert receipts["cmd-echo"]["outcome"] == "undelivered"
    assert receipts["cmd-echo"]["error_code"] == "30003"
    assert receipts["cmd-2"]["outcome"] == "undelivered"
    assert (receipts["cmd-2"]["error_code"], receipts["cmd-2"]["error"]) == (
        "4012",
        "carrier blocked",
    )
    assert {k for k, _ in statuses.records} == {A.encode()}
    await audit.until(
        lambda r: any(a["decision"] == "receipt_unlinked" for a in r.json_values()),
        what="the unlinked receipt audited",
    )


async def test_authentication_and_bad_requests_reach_nothing(
    settings: Settings, tmp_path: Path, workers: list[Worker], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    w = await start(settings, tmp_path, workers)
    ok = {"message_id": "m-1", "from": A, "to": SHORT, "body": "hi"}
    twilio_url = w.url + "/v1/inbound/twilio"
    fields = {"MessageSid": "SM-x", "From": A, "To": SHORT, "Body": "STATUS"}
    json_type = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.get(w.url + "/health")).status_code == 200
        assert (await c.get(w.url + "/ready")).status_code == 401
        assert (await c.get(w.url + "/ready", headers=KEY)).status_code == 200
        # Faust's own pages (tables, router) are off: they would hand out any record.
        assert (await c.get(w.url + "/table/subscribers/")).status_code == 404
        for path in ("/v1/status", "/v1/inbound", "/v1/receipts", "/internal/v1/status"):
            none = await c.post(w.url + path, json=ok)
            assert none.status_code == 401 and none.json()["error"] == "unauthorized"
            assert "Basic" in none.headers["WWW-Authenticate"]
            wrong = await c.post(w.url + path, json=ok, headers={"X-Outage-Sms-Key": "nope"})
            assert wrong.status_code == 401
        bad_basic = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
        r = await c.post(w.url + "/v1/inbound", json=ok, headers={"Authorization": bad_basic})
        assert r.status_code == 401

        big = orjson.dumps({**ok, "body": "x" * 5000})
        r = await c.post(w.url + "/v1/inbound", content=big, headers={**KEY, **json_type})
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000  # no Content-Length: chunked

        r = await c.post(w.url + "/v1/inbound", content=chunks(), headers={**KEY, **json_type})
        assert r.status_code == 413
        r = await c.post(w.url + "/v1/inbound", content=b"{nope", headers={**KEY, **json_type})
        assert (r.status_code, r.json()["error"]) == (400, "malformed_json")
        r = await c.post(w.url + "/v1/inbound", content=b"[]", headers={**KEY, **json_type})
        assert (r.status_code, r.json()["error"]) == (400, "not_an_object")
        r = await c.post(w.url + "/v1/inbound", data={"x": "1"}, headers=KEY)
        assert r.status_code == 415
        r = await c.post(w.url + "/v1/inbound", json={**ok, "from": "555-0111"}, headers=KEY)
        assert (r.status_code, r.json()["error"]) == (422, "validation")
        assert "555-0111" not in r.text
        r = await c.post(w.url + "/v1/status", json={"phone": "12345"}, headers=KEY)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_phone")
        r = await c.post(w.url + "/v1/receipts", json={"to": A, "status": "sent"}, headers=KEY)
        assert r.status_code == 422

        # Twilio: unsigned, forged, and replayed with a changed body.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post(twilio_url, content=urlencode(fields).encode(), headers=form)
        assert (r.status_code, r.json()["error"]) == (403, "bad_signature")
        r = await c.post(**twilio_post(twilio_url, fields, token="someone-elses-token"))  # noqa: S106
        assert r.status_code == 403
        signed = twilio_post(twilio_url, fields)
        signed["content"] = urlencode({**fields, "Body": "STOP"}).encode()
        r = await c.post(**signed)
        assert r.status_code == 403
        r = await c.post(**twilio_post(w.url + "/v1/receipts/twilio", {"MessageSid": "SM"}))
        assert r.status_code == 422  # signed, but not a status callback

    for role in (Role.INBOUND, Role.DELIVERY_STATUS, Role.AUDIT):
        assert sum((await end_offsets(bs, reg[role].name)).values()) == 0, role


async def test_web_refuses_to_start_without_credentials(
    settings: Settings, tmp_path: Path, workers: list[Worker]
) -> None:
    log = tmp_path / "nocreds.log"
    proc = WorkerProcess(
        settings,
        log,
        env={"OUTAGE_SMS_WEB_ENABLED": "true", "OUTAGE_SMS_WEB_PORT": str(free_port())},
    ).start()
    assert proc.proc is not None
    code = await asyncio.to_thread(proc.proc.wait, 60)
    proc.stop()
    assert code == 2, proc.log_tail()
    assert "OUTAGE_SMS_WEB_SECRET" in log.read_text()


async def test_a_lookup_is_answered_by_the_worker_owning_the_number(
    settings: Settings, tmp_path: Path, workers: list[Worker], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    first = await start(settings, tmp_path, workers)
    second = await start(settings, tmp_path, workers)
    await first.proc.log_contains("Worker ready", count=2)

    async def settled() -> tuple[list[int], list[int]] | None:
        a, b = await first.ready(), await second.ready()
        if not (a["ready"] and b["ready"]):
            return None
        mine, theirs = a["partitions"], b["partitions"]
        whole = sorted(mine + theirs) == list(range(settings.partitions))
        return (mine, theirs) if whole and mine and theirs else None

    _, theirs = await until(settled, "the two workers to split the partitions")
    # Customers on each worker's partitions (the phone numbers decide).
    phones = [f"+1415555{n:04d}" for n in range(200, 260)]
    remote = next(p for p in phones if phone_partition(p.encode(), settings.partitions) in theirs)
    local = next(
        p for p in phones if phone_partition(p.encode(), settings.partitions) not in theirs
    )
    await subscribe(settings, read, customer("CR", remote, ["R1"]), customer("CL", local, ["R2"]))
    commands = read(Role.SEND_COMMANDS)
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O7", 1)])
    await commands.until(lambda r: len(commands_to(r, remote)) == 1, what="the remote alert")

    routed = await status(first.url, remote)
    assert routed.status_code == 200, routed.text
    assert routed.headers[ANSWERED_BY] == second.url, "forwarded to the owner"
    assert routed.json()["status"] == "ongoing" and routed.json()["outage_ids"] == ["O7"]
    direct = await status(second.url, remote)
    assert direct.headers[ANSWERED_BY] == second.url
    same = {k: v for k, v in routed.json().items() if k != "as_of"}
    assert same == {k: v for k, v in direct.json().items() if k != "as_of"}
    r = await status(first.url, local)
    assert r.headers[ANSWERED_BY] == first.url and r.json()["status"] == "no_outage"
    # The internal endpoint never forwards: asked on the wrong worker it says so.
    async with httpx.AsyncClient(timeout=10) as c:
        wrong = await c.post(first.url + "/internal/v1/status", json={"phone": remote}, headers=KEY)
    assert wrong.status_code == 503 and wrong.headers["Retry-After"] == "1"
