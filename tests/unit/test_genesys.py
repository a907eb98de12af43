"""The Genesys client over real TCP against the fake provider on loopback.

Every outcome class, the token's life (cache, refresh before expiry, one refresh under
concurrency, 401 -> one refresh and retry), and that phone numbers stay out of logs.
httpx.MockTransport covers the few answers the fake has no reason to give.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from outage_sms.fake_provider import FakeConfig, FakeProvider
from streams.errors import ConfigurationError
from streams.genesys import (
    GenesysAuthError,
    GenesysClient,
    GenesysConfig,
    make_http_client,
    mask_numbers,
    parse_retry_after,
)
from streams.provider import (
    Accepted,
    OutboundMessage,
    Permanent,
    Provider,
    RetryAfter,
    Transient,
)

SENDER = "+14155550100"
TO = "+14155550123"


class Clock:
    """The client's token clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(to: str = TO, n: int = 0, from_: str = SENDER) -> OutboundMessage:
    return OutboundMessage(f"c-{n}", from_, to, f"Outage Alerts: power out ({n})")


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider(FakeConfig(senders={SENDER: 1000.0, "87654": 1000.0}))
    async with provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(httpx.Timeout(5.0, connect=2.0)) as client:
        yield client


def config_for(url: str, **extra: object) -> GenesysConfig:
    return GenesysConfig(
        client_id="fake-client",
        client_secret="fake-secret",  # noqa: S106 (the fake's test credential)
        api_base_url=url,
        login_base_url=url,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(fake: FakeProvider, http: httpx.AsyncClient, clock: Clock) -> GenesysClient:
    return GenesysClient(http, config_for(fake.url), clock=clock)


# --- happy path ------------------------------------------------------------------------


async def test_several_connection_pools_are_used_in_turn_with_one_token(
    fake: FakeProvider,
) -> None:
    seen: list[int] = []

    def hook(i: int) -> Any:
        async def on_request(request: httpx.Request) -> None:
            if request.url.path.endswith("agentless"):
                seen.append(i)

        return on_request

    pools = [make_http_client(httpx.Timeout(5.0, connect=2.0)) for _ in range(3)]
    for i, pool in enumerate(pools):
        pool.event_hooks["request"] = [hook(i)]
    try:
        client = GenesysClient(pools, config_for(fake.url))
        for _ in range(6):
            assert isinstance(await client.send(message()), Accepted)
    finally:
        for pool in pools:
            await pool.aclose()
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]
    assert fake.token_requests == 1


async def test_a_send_is_accepted_with_the_provider_message_id(
    fake: FakeProvider, client: GenesysClient
) -> None:
    result = await client.send(message())
    assert isinstance(result, Accepted)
    [sent] = fake.messages
    assert result.provider_message_id == sent.id
    assert result.conversation_id
    assert (sent.from_, sent.to, sent.text) == (SENDER, TO, "Outage Alerts: power out (0)")
    assert sent.use_existing_active_conversation is False


def test_the_client_is_a_provider(client: GenesysClient) -> None:
    assert isinstance(client, Provider)
    assert client.name == "genesys"


async def test_use_existing_active_conversation_is_configurable(
    fake: FakeProvider, http: httpx.AsyncClient
) -> None:
    client = GenesysClient(http, config_for(fake.url, use_existing_active_conversation=True))
    assert isinstance(await client.send(message()), Accepted)
    assert fake.messages[0].use_existing_active_conversation is True


def test_region_decides_the_default_hosts() -> None:
    config = GenesysConfig("id", "secret", region="mypurecloud.ie")
    assert config.api_url == "https://api.mypurecloud.ie"
    assert config.login_url == "https://login.mypurecloud.ie"
    assert "secret" not in repr(config)


def test_base_urls_override_the_region() -> None:
    config = config_for("http://127.0.0.1:9/")
    assert config.api_url == config.login_url == "http://127.0.0.1:9"


# --- the token -----------------------------------------------------------------------------


async def test_the_token_is_cached(fake: FakeProvider, client: GenesysClient) -> None:
    for n in range(5):
        assert isinstance(await client.send(message(n=n)), Accepted)
    assert fake.token_requests == 1


async def test_the_token_is_refreshed_before_it_expires(
    fake: FakeProvider, http: httpx.AsyncClient, clock: Clock
) -> None:
    fake.config.token_ttl = 600
    client = GenesysClient(http, config_for(fake.url, refresh_margin=60.0), clock=clock)
    first = await client.token()
    clock.now += 539
    assert await client.token() == first
    clock.now += 2
    assert await client.token() != first
    assert fake.token_requests == 2


async def test_the_refresh_margin_is_capped_at_half_a_short_lifetime(
    fake: FakeProvider, http: httpx.AsyncClient, clock: Clock
) -> None:
    fake.config.token_ttl = 10
    client = GenesysClient(http, config_for(fake.url, refresh_margin=300.0), clock=clock)
    first = await client.token()
    clock.now += 4.9
    assert await client.token() == first
    clock.now += 0.2
    assert await client.token() != first


async def test_concurrent_senders_share_one_token_fetch(
    fake: FakeProvider, client: GenesysClient
) -> None:
    results = await asyncio.gather(*(client.send(message(n=n)) for n in range(40)))
    assert all(isinstance(r, Accepted) for r in results)
    assert fake.token_requests == 1
    assert client.token_fetches == 1
    assert len({r.provider_message_id for r in results if isinstance(r, Accepted)}) == 40


async def test_a_401_forces_one_refresh_and_one_retry(
    fake: FakeProvider, client: GenesysClient
) -> None:
    await client.send(message())
    fake.revoke_tokens()
    result = await client.send(message(n=1))
    assert isinstance(result, Accepted)
    assert fake.token_requests == 2
    assert len(fake.messages) == 2
    assert [r.status for r in fake.requests] == [200, 200]  # a 401 is not a recorded request


async def test_a_wave_of_401s_causes_a_single_refresh(
    fake: FakeProvider, client: GenesysClient
) -> None:
    await client.send(message())
    fake.revoke_tokens()
    results = await asyncio.gather(*(client.send(message(n=n)) for n in range(1, 31)))
    assert all(isinstance(r, Accepted) for r in results)
    assert fake.token_requests == 2


async def test_wrong_credentials_stop_the_worker_not_the_message(
    fake: FakeProvider, http: httpx.AsyncClient
) -> None:
    config = GenesysConfig("fake-client", "wrong", api_base_url=fake.url, login_base_url=fake.url)
    with pytest.raises(GenesysAuthError, match="client credentials"):
        await GenesysClient(http, config).send(message())
    assert fake.requests == []


async def test_token_endpoint_outage_is_transient(
    fake: FakeProvider, client: GenesysClient
) -> None:
    fake.faults.token_errors, fake.faults.token_status = 1, 503
    assert await client.send(message()) == Transient("token_http_503", 503)
    assert isinstance(await client.send(message()), Accepted)


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> GenesysClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=5.0)
    return GenesysClient(http, config_for("https://fake.invalid"))


def token_or(
    api: Callable[[httpx.Request], httpx.Response],
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return api(request)

    return handler


async def test_a_401_to_a_fresh_token_is_a_configuration_error() -> None:
    client = mock_client(token_or(lambda _: httpx.Response(401, json={"code": "bad.credentials"})))
    with pytest.raises(GenesysAuthError, match="401"):
        await client.send(message())
    assert client.token_fetches == 2


async def test_a_403_names_the_missing_permission() -> None:
    client = mock_client(
        token_or(lambda _: httpx.Response(403, json={"code": "missing.permissions"}))
    )
    with pytest.raises(GenesysAuthError, match="conversation:message:create"):
        await client.send(message())


async def test_token_endpoint_429_is_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"})

    assert await mock_client(handler).send(message()) == RetryAfter(7.0, detail="token endpoint")


@pytest.mark.parametrize(
    "body", [{}, {"access_token": "", "expires_in": 60}, {"access_token": "t"}, []]
)
async def test_a_malformed_token_answer_is_transient(body: object) -> None:
    client = mock_client(lambda _: httpx.Response(200, json=body))
    assert await client.send(message()) == Transient("token_malformed", 200)


# --- outcomes ----------------------------------------------------------------------------------


async def test_429_carries_retry_after(fake: FakeProvider, client: GenesysClient) -> None:
    fake.faults.throttle, fake.faults.retry_after = 3, 2.5
    for _ in range(3):
        result = await client.send(message())
        assert isinstance(result, RetryAfter)
        assert (result.seconds, result.status) == (2.5, 429)
    assert isinstance(await client.send(message()), Accepted)


async def test_5xx_is_transient_and_not_ambiguous(
    fake: FakeProvider, client: GenesysClient
) -> None:
    fake.faults.server_errors, fake.faults.server_status = 2, 503
    result = await client.send(message())
    assert isinstance(result, Transient)
    assert (result.reason, result.status, result.ambiguous) == ("http_503", 503, False)


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(500, False), (502, False), (504, True), (408, False)]
)
async def test_server_side_failures(status: int, ambiguous: bool) -> None:
    result = await mock_client(token_or(lambda _: httpx.Response(status))).send(message())
    assert result == Transient(f"http_{status}", status, f"HTTP {status}", ambiguous)


async def test_a_slow_answer_times_out_as_an_ambiguous_failure(fake: FakeProvider) -> None:
    fake.faults.slow, fake.faults.slow_seconds = 1, None  # held until released
    timeout = httpx.Timeout(5.0, read=0.2)
    async with make_http_client(timeout) as http:
        client = GenesysClient(http, config_for(fake.url))
        await client.token()  # the token endpoint is not slowed
        result = await client.send(message())
    fake.release()
    assert result == Transient("timeout", ambiguous=True)
    # The fake had already taken the message: this is why a timeout is ambiguous.
    assert len(fake.messages) == 1


async def test_a_closed_port_is_a_connect_error(http: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GenesysClient(http, config_for(f"http://127.0.0.1:{port}"))
    assert await client.send(message()) == Transient("connect_error")


async def test_chosen_numbers_are_rejected_permanently_with_the_reason(
    fake: FakeProvider, client: GenesysClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "+14155550199"
    fake.faults.reject_numbers[bad] = "messaging.recipient.blocked"
    with caplog.at_level(logging.DEBUG):
        result = await client.send(message(to=bad))
    assert isinstance(result, Permanent)
    assert (result.code, result.status) == ("messaging.recipient.blocked", 400)
    assert "rejected" in result.reason
    assert bad not in result.reason and bad not in caplog.text
    assert "+1415*****99" in result.reason


async def test_an_unregistered_sender_is_permanent(
    fake: FakeProvider, client: GenesysClient
) -> None:
    fake.faults.unregistered.add(SENDER)
    result = await client.send(message())
    assert isinstance(result, Permanent)
    assert result.code == "messaging.address.not.provisioned"
    result = await client.send(message(from_="+14155550111"))  # never provisioned
    assert isinstance(result, Permanent) and result.code == "messaging.address.not.provisioned"


async def test_an_invalid_number_is_permanent(fake: FakeProvider, client: GenesysClient) -> None:
    result = await client.send(message(to="4155550123"))
    assert isinstance(result, Permanent) and result.code == "messaging.address.invalid"


async def test_an_error_without_a_json_body_still_classifies() -> None:
    client = mock_client(token_or(lambda _: httpx.Response(422, text="<html>nope</html>")))
    assert await client.send(message()) == Permanent("http_422", "HTTP 422", 422)


@pytest.mark.parametrize("body", [{}, {"id": ""}, {"id": 5}, "not an object"])
async def test_2xx_without_an_id_is_still_sent(body: object) -> None:
    client = mock_client(token_or(lambda _: httpx.Response(202, json=body)))
    assert await client.send(message()) == Accepted(None)


async def test_phone_numbers_never_reach_the_log(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GenesysClient(http, config_for(f"http://127.0.0.1:{port}"))
    with caplog.at_level(logging.DEBUG):
        await client.send(message())
    assert TO not in caplog.text and "c-0" in caplog.text


# --- construction and helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout",
    [None, httpx.Timeout(5.0, read=None), httpx.Timeout(5.0, pool=None)],
)
async def test_a_client_without_every_timeout_is_refused(timeout: httpx.Timeout | None) -> None:
    async with httpx.AsyncClient(timeout=timeout) as http:
        with pytest.raises(ConfigurationError, match="timeout"):
            GenesysClient(http, config_for("http://127.0.0.1:9"))


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        (None, 1.0),
        ("", 1.0),
        ("soon", 1.0),
        ("nan", 1.0),
        ("inf", 1.0),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float) -> None:
    assert parse_retry_after(header, NOW, 1.0) == expected


def test_mask_numbers_masks_every_number_in_a_text() -> None:
    text = "to +14155550123 from 14155550100 ok 123"
    assert mask_numbers(text) == "to +1415*****23 from 14155****00 ok 123"
