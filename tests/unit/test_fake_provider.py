"""The fake provider itself: Genesys-shaped answers, rate walls it reports, faults, control.

Its rate checks run on an injected clock, so "two sends in the same second" is a fact of
the test, not of the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from outage_sms.fake_provider import FakeConfig, FakeProvider

SENDER = "+14155550100"
SHORT = "87654"
TO = "+14155550123"
AUTH = ("fake-client", "fake-secret")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Session:
    """Raw HTTP against the fake, with a token, as a provider client would do it."""

    def __init__(self, fake: FakeProvider, http: httpx.AsyncClient) -> None:
        self.fake, self.http = fake, http
        self.token = ""

    async def login(self, auth: tuple[str, str] = AUTH) -> httpx.Response:
        r = await self.http.post(
            self.fake.url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=auth
        )
        if r.status_code == 200:
            self.token = r.json()["access_token"]
        return r

    async def send(self, from_: str = SENDER, to: str = TO, **body: Any) -> httpx.Response:
        payload = {
            "fromAddress": from_,
            "toAddress": to,
            "toAddressMessengerType": "sms",
            "textBody": "Outage Alerts: power out",
            **body,
        }
        return await self.http.post(
            self.fake.url + "/api/v2/conversations/messages/agentless",
            json=payload,
            headers={"Authorization": f"Bearer {self.token}"},
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def started(config: FakeConfig, clock: Clock) -> AsyncIterator[Session]:
    fake = FakeProvider(config, clock=clock)
    async with fake, httpx.AsyncClient(timeout=5.0) as http:
        session = Session(fake, http)
        await session.login()
        yield session


@pytest.fixture
async def s(clock: Clock) -> AsyncIterator[Session]:
    config = FakeConfig(senders={SENDER: 1.0, SHORT: 100.0}, client_limit=None)
    async for session in started(config, clock):
        yield session


# --- the API's shape ----------------------------------------------------------------------


async def test_token_answer_is_genesys_shaped(s: Session) -> None:
    r = await s.login()
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 86_400  # noqa: S105


@pytest.mark.parametrize("auth", [("fake-client", "nope"), ("who", "fake-secret")])
async def test_bad_client_credentials_are_invalid_client(s: Session, auth: tuple[str, str]) -> None:
    r = await s.login(auth)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_token_endpoint_needs_basic_auth_and_the_grant(s: Session) -> None:
    url = s.fake.url + "/oauth/token"
    r = await s.http.post(url, data={"grant_type": "client_credentials"})
    assert r.status_code == 401
    r = await s.http.post(url, data={"grant_type": "password"}, auth=AUTH)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await s.http.post(
        url, data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!"}
    )
    assert r.status_code == 401


async def test_agentless_answer_is_genesys_shaped(s: Session) -> None:
    r = await s.send()
    assert r.status_code == 200
    body = r.json()
    assert {
        "id",
        "conversationId",
        "fromAddress",
        "toAddress",
        "messengerType",
        "timestamp",
    } <= set(body)
    assert (body["fromAddress"], body["toAddress"], body["messengerType"]) == (SENDER, TO, "sms")
    assert body["timestamp"].endswith("Z")
    assert body["message"]["status"] == "queued"
    [rec] = s.fake.messages
    assert (rec.id, rec.client_id, rec.at) == (body["id"], "fake-client", 100.0)


async def test_without_a_valid_token_it_is_401(s: Session, clock: Clock) -> None:
    s.token = "forged"  # noqa: S105
    r = await s.send()
    assert r.status_code == 401 and r.json()["status"] == 401
    await s.login()
    clock.now += 86_400
    assert (await s.send()).status_code == 401
    assert s.fake.requests == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"textBody": ""}, "bad.request"),
        ({"fromAddress": None}, "bad.request"),
        ({"toAddressMessengerType": "fax"}, "bad.request"),
        ({"toAddressMessengerType": "whatsapp"}, "bad.request"),
        ({"textBody": "x" * 766}, "messaging.text.too.long"),
        ({"toAddress": "4155550123"}, "messaging.address.invalid"),
        ({"fromAddress": "+19995550100"}, "messaging.address.not.provisioned"),
    ],
)
async def test_bad_requests_get_genesys_error_bodies(
    s: Session, body: dict[str, Any], code: str
) -> None:
    r = await s.send(**body)
    assert r.status_code == 400
    err = r.json()
    assert err["code"] == code and err["status"] == 400 and err["message"]
    assert {"messageWithParams", "contextId", "details", "errors"} <= set(err)
    assert s.fake.messages == []
    assert [x.status for x in s.fake.requests] == [400]


async def test_malformed_json_is_a_bad_request(s: Session) -> None:
    r = await s.http.post(
        s.fake.url + "/api/v2/conversations/messages/agentless",
        content=b"{nope",
        headers={"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "bad.request"


async def test_any_sender_is_accepted_when_none_are_configured(clock: Clock) -> None:
    async for s in started(FakeConfig(), clock):
        for _ in range(5):
            assert (await s.send(from_="+19995550100")).status_code == 200
        assert s.fake.stats()["violation_total"] == 0


# --- rate walls ---------------------------------------------------------------------------


async def test_paced_at_the_rate_nothing_is_reported(s: Session, clock: Clock) -> None:
    for _ in range(5):
        assert (await s.send()).status_code == 200
        clock.now += 1.0
    for _ in range(300):
        assert (await s.send(from_=SHORT)).status_code == 200
        clock.now += 0.01
    assert s.fake.violations == {}


async def test_network_jitter_within_tolerance_is_no_violation(s: Session, clock: Clock) -> None:
    await s.send()
    clock.now += 0.985  # arrived 15 ms early
    await s.send()
    assert s.fake.violations == {}


async def test_over_the_sender_rate_is_recorded_and_still_accepted(
    s: Session, clock: Clock
) -> None:
    assert (await s.send()).status_code == 200
    clock.now += 0.5
    assert (await s.send()).status_code == 200
    assert s.fake.violations == {f"sender:{SENDER}": 1}
    assert s.fake.messages[1].violations == (f"sender:{SENDER}",)
    r = await s.http.get(s.fake.url + "/fake/stats")
    assert r.json()["violation_total"] == 1


@pytest.mark.parametrize(("mode", "status"), [("reject_400", 400), ("reject_429", 429)])
async def test_sender_violations_can_be_refused(clock: Clock, mode: str, status: int) -> None:
    config = FakeConfig(senders={SENDER: 1.0}, client_limit=None, sender_violation=mode)  # type: ignore[arg-type]
    async for s in started(config, clock):
        await s.send()
        r = await s.send()
        assert r.status_code == status and r.json()["code"] == "messaging.rate.exceeded"
        assert len(s.fake.messages) == 1
        # A refused message did not use the sender's budget.
        clock.now += 1.0
        assert (await s.send()).status_code == 200
        assert s.fake.violations == {f"sender:{SENDER}": 1}


async def test_rates_can_count_segments(clock: Clock) -> None:
    config = FakeConfig(senders={SENDER: 2.0}, per_segment=True, client_limit=None)
    async for s in started(config, clock):
        await s.send(textBody="x" * 200)  # two segments: the whole second's budget
        clock.now += 0.5
        await s.send()
        assert s.fake.violations == {f"sender:{SENDER}": 1}


async def test_the_client_limit_answers_429_with_retry_after(clock: Clock) -> None:
    config = FakeConfig(senders={SENDER: 1000.0}, client_limit=3, client_retry_after=4)
    async for s in started(config, clock):
        for _ in range(3):
            assert (await s.send()).status_code == 200
        r = await s.send()
        assert r.status_code == 429 and r.headers["Retry-After"] == "4"
        assert s.fake.violations == {"client:fake-client": 1}
        clock.now += 60.0
        assert (await s.send()).status_code == 200


async def test_client_violations_can_be_only_recorded(clock: Clock) -> None:
    config = FakeConfig(client_limit=1, client_violation="record")
    async for s in started(config, clock):
        assert (await s.send()).status_code == 200
        assert (await s.send()).status_code == 200
        assert s.fake.violations == {"client:fake-client": 1}


async def test_each_client_has_its_own_budget(clock: Clock) -> None:
    config = FakeConfig(clients={"a": "1", "b": "2"}, client_limit=1)
    async for s in started(config, clock):
        await s.login(("a", "1"))
        assert (await s.send()).status_code == 200
        await s.login(("b", "2"))
        assert (await s.send()).status_code == 200
        assert s.fake.violations == {}


# --- faults -------------------------------------------------------------------------------


async def test_throttle_storm_then_recovery(s: Session) -> None:
    s.fake.faults.throttle, s.fake.faults.retry_after = 2, 1.5
    for _ in range(2):
        r = await s.send()
        assert r.status_code == 429 and r.headers["Retry-After"] == "1.5"
    assert (await s.send()).status_code == 200


async def test_server_errors_on_demand(s: Session) -> None:
    s.fake.faults.server_errors, s.fake.faults.server_status = 1, 502
    assert (await s.send()).status_code == 502
    assert (await s.send()).status_code == 200


async def test_a_held_response_goes_on_release(s: Session) -> None:
    s.fake.faults.slow, s.fake.faults.slow_seconds = 1, None
    pending = asyncio.create_task(s.send())
    while not s.fake.messages:  # recorded before the hold
        await asyncio.sleep(0)
    assert not pending.done()
    s.fake.release()
    assert (await pending).status_code == 200


async def test_slow_responses_by_duration(s: Session) -> None:
    s.fake.faults.slow, s.fake.faults.slow_seconds = 1, 0.01
    assert (await s.send()).status_code == 200
    assert s.fake.faults.slow == 0


# --- control over HTTP --------------------------------------------------------------------


async def test_faults_messages_stats_and_reset_over_http(s: Session) -> None:
    url = s.fake.url
    r = await s.http.post(
        url + "/fake/faults",
        json={
            "throttle": 1,
            "retry_after": 3,
            "unregistered": [SHORT],
            "reject_numbers": {TO: "x.y"},
        },
    )
    assert r.status_code == 200 and r.json()["unregistered"] == [SHORT]
    assert (await s.send()).status_code == 429
    assert (await s.send()).json()["code"] == "x.y"
    assert (await s.send(from_=SHORT, to="+14155550124")).status_code == 400
    assert (await s.send(to="+14155550124")).status_code == 200
    messages = (await s.http.get(url + "/fake/messages")).json()["messages"]
    assert [(m["from"], m["to"]) for m in messages] == [(SENDER, "+14155550124")]
    everything = (await s.http.get(url + "/fake/messages", params={"all": "1"})).json()
    assert [m["status"] for m in everything["messages"]] == [429, 400, 400, 200]
    only = (await s.http.get(url + "/fake/messages", params={"to": TO, "all": "1"})).json()
    assert len(only["messages"]) == 2
    stats = (await s.http.get(url + "/fake/stats")).json()
    assert stats["by_status"] == {"429": 1, "400": 2, "200": 1}
    assert (await s.http.post(url + "/fake/reset")).json() == {"reset": True}
    assert s.fake.requests == [] and s.fake.faults.unregistered == set()


async def test_revoke_and_release_over_http(s: Session) -> None:
    r = await s.http.post(
        s.fake.url + "/fake/faults", json={"revoke_tokens": True, "release": True}
    )
    assert r.status_code == 200
    assert (await s.send()).status_code == 401


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"nonsense": 1}'])
async def test_bad_fault_requests_are_refused(s: Session, body: bytes) -> None:
    r = await s.http.post(s.fake.url + "/fake/faults", content=body)
    assert r.status_code == 400


# --- as a process -------------------------------------------------------------------------


async def test_runs_as_a_module_and_prints_its_url() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outage_sms.fake_provider",
        "--port",
        "0",
        "--sender",
        f"{SENDER}=1",
        "--client",
        "me:pw",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(timeout=5.0) as http:
            r = await http.post(
                url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=("me", "pw")
            )
            assert r.status_code == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
