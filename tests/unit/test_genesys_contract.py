"""Contract with the official Genesys SDK (``purecloudplatformclientv2``, a test dependency).

Our request bodies, as they go over the wire, must fit the SDK's
``SendAgentlessOutboundMessageRequest``; the fake provider's answers must parse with the
SDK's own deserializer into ``SendAgentlessOutboundMessageResponse`` and ``ErrorBody``.
The SDK models are plain classes with a ``swagger_types`` map (name -> type) and an
``attribute_map`` (name -> JSON key); enum setters replace unknown values with
``outdated_sdk_version`` instead of raising, so the tests look for that.

The SDK package imports all ~6,600 models on import (about 2 s); we load only the modules
we use under a stub package whose ``models`` attribute imports a model on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from outage_sms.fake_provider import FakeConfig, FakeProvider
from streams.genesys import GenesysClient, GenesysConfig, make_http_client
from streams.provider import Accepted, OutboundMessage

SDK = "PureCloudPlatformClientV2"
SENDER = "+14155550100"


def _load_sdk() -> tuple[Any, Any]:
    """(models namespace, ApiClient class), without importing the whole SDK."""
    spec = importlib.util.find_spec(SDK)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("purecloudplatformclientv2 is not installed (pip install -e '.[dev]')")
    if SDK not in sys.modules:
        root = list(spec.submodule_search_locations)[0]
        package = types.ModuleType(SDK)
        package.__path__ = [root]
        models = types.ModuleType(f"{SDK}.models")
        models.__path__ = [f"{root}/models"]

        def model(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            return getattr(importlib.import_module(f"{SDK}.models.{module}"), name)

        models.__getattr__ = model  # type: ignore[method-assign]
        package.models = models  # type: ignore[attr-defined]
        sys.modules[SDK] = package
        sys.modules[f"{SDK}.models"] = models
    api_client = importlib.import_module(f"{SDK}.api_client")
    return sys.modules[f"{SDK}.models"], api_client.ApiClient


MODELS, API_CLIENT = _load_sdk()
PY_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "bool": bool, "int": int}


class _Response:
    """What ``ApiClient.deserialize`` reads from a urllib3 response."""

    def __init__(self, response: httpx.Response) -> None:
        self.data = response.text
        self._type = response.headers.get("Content-Type", "")

    def getheader(self, name: str) -> str:
        return self._type


def deserialize(response: httpx.Response, model: str) -> Any:
    return API_CLIENT().deserialize(_Response(response), model)


async def captured_body(message: OutboundMessage, **config: Any) -> dict[str, Any]:
    """The JSON our client really puts on the wire for ``message``."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        seen.append(request.content)
        return httpx.Response(200, json={"id": "m"})

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:
        client = GenesysClient(http, GenesysConfig("id", "secret", **config))
        assert isinstance(await client.send(message), Accepted)
    [body] = seen
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


MESSAGE = OutboundMessage("c-1", SENDER, "+14155550123", "Outage Alerts: power out. Reply STOP")


# --- requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
async def test_request_body_fits_the_sdk_request_model(existing: bool) -> None:
    body = await captured_body(MESSAGE, use_existing_active_conversation=existing)
    model = MODELS.SendAgentlessOutboundMessageRequest()
    by_key = {key: attr for attr, key in model.attribute_map.items()}
    assert set(body) <= set(by_key), f"fields the SDK does not know: {set(body) - set(by_key)}"
    for key, value in body.items():
        attr = by_key[key]
        assert isinstance(value, PY_TYPES[model.swagger_types[attr]]), key
        setattr(model, attr, value)
    # The enum setter quietly swaps unknown values for "outdated_sdk_version".
    assert model.to_address_messenger_type == "sms"
    # Round trip: the SDK serialises the model to exactly our body.
    from PureCloudPlatformClientV2.utils import sanitize_for_serialization

    assert sanitize_for_serialization(model) == body
    as_dict = {model.attribute_map[k]: v for k, v in model.to_dict().items() if v is not None}
    assert as_dict == body
    assert body["useExistingActiveConversation"] is existing


async def test_request_names_the_request_field_not_the_response_one() -> None:
    body = await captured_body(MESSAGE)
    assert body["toAddressMessengerType"] == "sms" and "messengerType" not in body


async def test_request_body_helper_matches_the_wire() -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        client = GenesysClient(http, GenesysConfig("id", "secret"))
        assert client.request_body(MESSAGE) == await captured_body(MESSAGE)


# --- responses from the fake -----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider(FakeConfig(senders={SENDER: 100.0}))
    async with provider:
        yield provider


async def raw_send(fake: FakeProvider, **overrides: Any) -> httpx.Response:
    async with make_http_client() as http:
        client = GenesysClient(
            http,
            GenesysConfig(
                "fake-client", "fake-secret", api_base_url=fake.url, login_base_url=fake.url
            ),
        )
        body = {**client.request_body(MESSAGE), **overrides}
        return await http.post(
            fake.url + "/api/v2/conversations/messages/agentless",
            json=body,
            headers={"Authorization": f"Bearer {await client.token()}"},
        )


async def test_fake_success_parses_with_the_sdk_response_model(fake: FakeProvider) -> None:
    response = await raw_send(fake)
    assert response.status_code == 200
    parsed = deserialize(response, "SendAgentlessOutboundMessageResponse")
    assert type(parsed).__name__ == "SendAgentlessOutboundMessageResponse"
    [rec] = fake.messages
    assert parsed.id == rec.id
    assert parsed.conversation_id
    assert (parsed.from_address, parsed.to_address) == (SENDER, MESSAGE.to)
    assert parsed.messenger_type == "sms"
    assert isinstance(parsed.timestamp, datetime) and parsed.timestamp.tzinfo is not None
    assert parsed.message.status == "queued" and parsed.message.direction == "outbound"
    assert parsed.message.messenger_type == "sms"
    assert parsed.user.id and parsed.self_uri


async def test_fake_success_uses_only_fields_the_sdk_knows(fake: FakeProvider) -> None:
    body = (await raw_send(fake)).json()
    known = set(MODELS.SendAgentlessOutboundMessageResponse().attribute_map.values())
    # textBody is in Genesys's documented response (FACTS.md) but not in this SDK model.
    assert set(body) - known == {"textBody"}
    message_keys = set(MODELS.MessageData().attribute_map.values())
    assert set(body["message"]) <= message_keys


async def test_our_client_reads_the_same_id_the_sdk_reads(fake: FakeProvider) -> None:
    async with make_http_client() as http:
        config = GenesysConfig(
            "fake-client", "fake-secret", api_base_url=fake.url, login_base_url=fake.url
        )
        result = await GenesysClient(http, config).send(MESSAGE)
    assert isinstance(result, Accepted)
    assert result.provider_message_id == fake.messages[0].id


@pytest.mark.parametrize(
    ("overrides", "status"),
    [({"toAddress": "12"}, 400), ({"fromAddress": "+19995550100"}, 400), ({"textBody": ""}, 400)],
)
async def test_fake_errors_parse_with_the_sdk_error_model(
    fake: FakeProvider, overrides: dict[str, Any], status: int
) -> None:
    response = await raw_send(fake, **overrides)
    assert response.status_code == status
    err = deserialize(response, "ErrorBody")
    assert type(err).__name__ == "ErrorBody"
    assert err.status == status and err.code and err.message
    assert set(response.json()) <= set(err.attribute_map.values())


async def test_fake_429_parses_with_the_sdk_error_model(fake: FakeProvider) -> None:
    fake.faults.throttle = 1
    response = await raw_send(fake)
    assert response.status_code == 429 and response.headers["Retry-After"]
    err = deserialize(response, "ErrorBody")
    assert err.status == 429 and err.code == "too.many.requests"
