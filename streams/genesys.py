"""Genesys Cloud agentless SMS, behind the ``streams.provider.Provider`` interface.

``POST https://api.<region>/api/v2/conversations/messages/agentless`` with an OAuth
client-credentials token from ``https://login.<region>/oauth/token``. The token is cached
and refreshed ``refresh_margin`` seconds before it expires (by an injected clock, so tests
need no sleeps); concurrent senders share one refresh; a 401 forces one refresh and one
retry. Responses become provider results (see ``streams.provider``): the status code and
httpx's exception types stop here.

Phone numbers never reach a log line, and provider error texts (which may quote the
number) are masked before they go anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from .errors import ConfigurationError
from .http11 import LeanClient, LeanTransport
from .masking import mask_phone
from .provider import (
    Accepted,
    OutboundMessage,
    Permanent,
    ProviderResult,
    RetryAfter,
    Transient,
)

__all__ = [
    "AGENTLESS_PATH",
    "TOKEN_PATH",
    "GenesysAuthError",
    "GenesysClient",
    "GenesysConfig",
    "error_body",
    "make_http_client",
    "mask_numbers",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a URL path, not a secret)
AGENTLESS_PATH = "/api/v2/conversations/messages/agentless"

_NUMBER = re.compile(r"\+?\d{7,15}")


def mask_numbers(text: str) -> str:
    """Provider messages quote the number they reject ("Invalid toAddress +1415...")."""
    return _NUMBER.sub(lambda m: mask_phone(m.group(0)), text)


class GenesysAuthError(ConfigurationError):
    """Credentials or permissions are wrong: no message can succeed until someone fixes it."""


@dataclass(frozen=True, slots=True)
class GenesysConfig:
    """One OAuth client in one Genesys region. Defaults are Genesys's, not ours."""

    client_id: str
    client_secret: str = field(repr=False)
    region: str = "mypurecloud.com"
    """The org's region domain: ``mypurecloud.com``, ``mypurecloud.ie``, ``euw2.pure.cloud``."""
    api_base_url: str | None = None
    """Overrides ``https://api.<region>`` (the fake provider, a proxy)."""
    login_base_url: str | None = None
    """Overrides ``https://login.<region>``."""
    use_existing_active_conversation: bool = False
    """Without it, a number with an active conversation (bot, agent) cannot be texted."""
    refresh_margin: float = 300.0
    """Refresh this many seconds before expiry (capped at half the token's lifetime)."""
    default_retry_after: float = 1.0
    """Wait this long after a 429 that carries no usable ``Retry-After``."""

    @property
    def api_url(self) -> str:
        return (self.api_base_url or f"https://api.{self.region}").rstrip("/")

    @property
    def login_url(self) -> str:
        return (self.login_base_url or f"https://login.{self.region}").rstrip("/")


def make_http_client(
    timeout: httpx.Timeout | None = None, max_connections: int = 100, lean: bool = True
) -> httpx.AsyncClient:
    """A client with every timeout set: a hung provider must not stall the worker.

    ``lean`` (the default) is ``streams.http11.LeanClient`` on a ``LeanTransport``: the
    same httpx API at a third of the CPU per request, which was the dispatcher's largest
    cost (bench/results/dispatch.md). It uses no proxy; behind an HTTP proxy, use
    ``lean=False``, httpx's own client and transport."""
    timeout = timeout or httpx.Timeout(10.0, connect=3.0, pool=5.0)
    if lean:
        return LeanClient(timeout=timeout, transport=LeanTransport(max_connections=max_connections))
    return httpx.AsyncClient(
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )


def parse_retry_after(value: str | None, now: datetime, default: float) -> float:
    """Seconds to wait: ``Retry-After`` is delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return default
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return default
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float


class _NoToken(Exception):
    """The token endpoint failed in a way one message's retry may outlive."""

    def __init__(self, result: RetryAfter | Transient) -> None:
        super().__init__(result)
        self.result = result


def _transport_result(exc: httpx.TransportError) -> Transient:
    """Was the request possibly processed? Only if it was sent and no answer came back."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Transient("connect_timeout")
    if isinstance(exc, httpx.PoolTimeout):
        return Transient("pool_timeout")
    if isinstance(exc, httpx.ConnectError):
        return Transient("connect_error")
    if isinstance(exc, httpx.WriteTimeout | httpx.WriteError):
        return Transient("write_error")
    if isinstance(exc, httpx.ReadTimeout):
        return Transient("timeout", ambiguous=True)
    return Transient(type(exc).__name__.lower(), detail=str(exc)[:200], ambiguous=True)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


class GenesysClient:
    """``Provider`` for Genesys Cloud; one instance per OAuth client, safe to share."""

    def __init__(
        self,
        http: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        config: GenesysConfig,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
    ) -> None:
        # Several small pools, used in turn, cost less than one big one: httpcore checks
        # every pooled connection on each request (bench/results/dispatch.md).
        pool = [http] if isinstance(http, httpx.AsyncClient) else list(http)
        if not pool:
            raise ConfigurationError("the Genesys client needs at least one httpx.AsyncClient")
        for client in pool:
            t = client.timeout
            if None in (t.connect, t.read, t.write, t.pool):
                raise ConfigurationError(
                    "the Genesys client needs an httpx.AsyncClient with every timeout set "
                    "(connect, read, write, pool); use streams.genesys.make_http_client()"
                )
        self._http = pool[0]
        self._pool = itertools.cycle(pool)
        self.config = config
        self._clock = clock
        self._wall = wall or (lambda: datetime.now(UTC))
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        # Built once: httpx parses a str URL on every request.
        self._send_url = httpx.URL(config.api_url + AGENTLESS_PATH)
        self.token_fetches = 0
        """How many tokens were fetched; tests check there is one refresh at a time."""

    @property
    def name(self) -> str:
        return "genesys"

    def request_body(self, message: OutboundMessage) -> dict[str, Any]:
        """The JSON body, field names as in the SDK's ``SendAgentlessOutboundMessageRequest``."""
        return {
            "fromAddress": message.from_,
            "toAddress": message.to,
            "toAddressMessengerType": "sms",
            "textBody": message.body,
            "useExistingActiveConversation": self.config.use_existing_active_conversation,
        }

    async def send(self, message: OutboundMessage) -> ProviderResult:
        try:
            token = await self.token()
        except _NoToken as exc:
            log.warning("Genesys token unavailable for %s: %s", message.command_id, exc.result)
            return exc.result
        result = await self._post(message, token)
        if result is None:  # 401: the token was revoked or expired early
            self.invalidate(token)
            try:
                token = await self.token()
            except _NoToken as exc:
                return exc.result
            result = await self._post(message, token)
            if result is None:
                raise GenesysAuthError(
                    "Genesys answered 401 to a freshly issued token: check that the OAuth "
                    "client is a client-credentials grant in this org and region"
                )
        return result

    async def token(self) -> str:
        """A valid token; concurrent callers wait for one refresh instead of each fetching."""
        current = self._token
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        async with self._lock:
            current = self._token
            if current is not None and self._clock() < current.refresh_at:
                return current.value
            self._token = await self._fetch_token()
            return self._token.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` unless another task already replaced it (one refresh per 401 wave)."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _fetch_token(self) -> _Token:
        url = self.config.login_url + TOKEN_PATH
        started = self._clock()
        self.token_fetches += 1
        try:
            response = await self._http.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(self.config.client_id, self.config.client_secret),
            )
        except httpx.TransportError as exc:
            raise _NoToken(_transport_result(exc)) from None
        status = response.status_code
        if status == 429:
            wait = parse_retry_after(
                response.headers.get("Retry-After"), self._wall(), self.config.default_retry_after
            )
            raise _NoToken(RetryAfter(wait, detail="token endpoint"))
        if status >= 500 or status == 408:
            raise _NoToken(Transient(f"token_http_{status}", status))
        body = _json(response)
        if status >= 400:
            raise GenesysAuthError(
                f"Genesys login refused the client credentials (HTTP {status}, "
                f"{body.get('error') or body.get('code') or 'no code'}): check the client id, "
                f"secret and region ({self.config.login_url})"
            )
        value, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(value, str) or not value or not isinstance(expires_in, int | float):
            raise _NoToken(Transient("token_malformed", status))
        margin = min(self.config.refresh_margin, float(expires_in) / 2)
        log.info("Genesys token issued, valid for %ss", expires_in)
        # Count the lifetime from when we asked: the server's clock started before ours read it.
        return _Token(value, started + float(expires_in) - margin)

    async def _post(self, message: OutboundMessage, token: str) -> ProviderResult | None:
        """One request; None means 401 (the caller refreshes the token)."""
        try:
            response = await next(self._pool).post(
                self._send_url,
                # orjson: a third of the stdlib encoder's time; same JSON on the wire.
                content=orjson.dumps(self.request_body(message)),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            result = _transport_result(exc)
            log.warning(
                "Genesys send %s to %s: %s",
                message.command_id,
                mask_phone(message.to),
                result.reason,
            )
            return result
        return self._classify(message, response)

    def _classify(
        self, message: OutboundMessage, response: httpx.Response
    ) -> ProviderResult | None:
        status = response.status_code
        if 200 <= status < 300:
            body = _json(response)
            mid, conv = body.get("id"), body.get("conversationId")
            if not isinstance(mid, str) or not mid:
                log.warning("Genesys accepted %s without a message id", message.command_id)
                mid = None
            return Accepted(mid, conv if isinstance(conv, str) else None)
        if status == 401:
            return None
        body = _json(response)
        code = body.get("code")
        code = code if isinstance(code, str) and code else f"http_{status}"
        text = body.get("message")
        reason = mask_numbers(text)[:500] if isinstance(text, str) and text else f"HTTP {status}"
        if status == 403:
            raise GenesysAuthError(
                f"Genesys refused the send ({code}): the OAuth client needs the "
                "conversation:message:create permission"
            )
        if status == 429:
            wait = parse_retry_after(
                response.headers.get("Retry-After"), self._wall(), self.config.default_retry_after
            )
            return RetryAfter(wait, status, reason)
        if status >= 500 or status == 408:
            return Transient(f"http_{status}", status, reason, ambiguous=status == 504)
        log.warning(
            "Genesys rejected %s to %s: %s %s",
            message.command_id,
            mask_phone(message.to),
            code,
            reason,
        )
        return Permanent(code, reason, status)


def error_body(status: int, code: str, message: str, **extra: Any) -> Mapping[str, Any]:
    """A Genesys-shaped error body (SDK model ``ErrorBody``); the fake provider uses it."""
    return {"message": message, "code": code, "status": status, **extra}
