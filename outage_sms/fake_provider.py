"""A fake Genesys Cloud on loopback: a real HTTP server for tests, the demo and benchmarks.

It speaks the part of the API the dispatcher uses (``POST /oauth/token`` and
``POST /api/v2/conversations/messages/agentless``) with Genesys-shaped JSON, records
every message, checks the throughput walls the real service has, and injects faults on
demand. The dispatcher talks to it over TCP exactly as it talks to Genesys: only the base
URLs differ.

Built on aiohttp's server because it is already installed (Faust depends on it), handles
HTTP/1.1 keep-alive and pipelining correctly, and runs a few thousand requests per second
per core: a hand-written h11 loop would be more code to trust and slower.

Rates are checked as the carrier and Genesys state them, "N per window": a sender may
put at most ``rate * window`` units into any window, and an OAuth client at most
``client_limit`` requests into any ``client_window``. Network jitter bunches requests a
little on arrival, so each window is shortened by ``jitter`` seconds before counting.
A violation is always counted; whether it is also refused (400 or 429, as the real
service would) is configurable.

Control from tests in-process (``fake.faults``, ``fake.messages``, ``fake.stats()``), or
from other processes over HTTP: ``GET /fake/messages``, ``GET /fake/stats``,
``POST /fake/faults``, ``POST /fake/reset``.

    python -m outage_sms.fake_provider --port 8089 --sender +14155550100=1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import random
import re
import secrets
import signal
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from streams.genesys import AGENTLESS_PATH, TOKEN_PATH, error_body
from streams.sms_text import segment_info

from .fastloop import run_fast

__all__ = ["FakeConfig", "FakeProvider", "Faults", "Recorded", "main"]

log = logging.getLogger(__name__)

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_MESSENGER_TYPES = ("sms", "whatsapp", "open", "webmessaging", "apple")
MAX_SMS_TEXT = 765

SenderViolation = Literal["record", "reject_400", "reject_429"]
ClientViolation = Literal["record", "reject_429"]


@dataclass
class FakeConfig:
    clients: dict[str, str] = field(default_factory=lambda: {"fake-client": "fake-secret"})
    """OAuth client id -> secret."""
    senders: dict[str, float] | None = None
    """Provisioned fromAddress -> rate (units per second). None: any sender, unlimited."""
    per_segment: bool = False
    """Count segments instead of messages against a sender's rate."""
    window: float = 1.0
    jitter: float = 0.02
    client_limit: int | None = 300
    client_window: float = 60.0
    client_jitter: float = 0.5
    sender_violation: SenderViolation = "record"
    """Genesys accepts an over-rate message and the carrier drops it: record, do not refuse."""
    client_violation: ClientViolation = "reject_429"
    client_retry_after: int = 1
    token_ttl: int = 86_400


@dataclass
class Faults:
    """What goes wrong next; counts are consumed request by request (agentless only)."""

    throttle: int = 0
    retry_after: float = 1.0
    server_errors: int = 0
    server_status: int = 503
    slow: int = 0
    slow_seconds: float | None = 1.0
    """None: hold the response until ``FakeProvider.release()``."""
    reject_numbers: dict[str, str] = field(default_factory=dict)
    """toAddress -> error code, answered with 400."""
    unregistered: set[str] = field(default_factory=set)
    """fromAddresses answered with 400 as not provisioned, even if configured."""
    token_errors: int = 0
    token_status: int = 503


@dataclass(frozen=True, slots=True)
class Recorded:
    seq: int
    at: float
    client_id: str
    from_: str
    to: str
    text: str
    status: int
    id: str | None
    use_existing_active_conversation: bool = False
    violations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["from"] = out.pop("from_")
        out["violations"] = list(self.violations)
        return out


class _Window:
    """Units in the last ``span`` seconds, to check "at most N per window"."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.events: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def would_hold(self, now: float, units: float) -> float:
        while self.events and self.events[0][0] <= now - self.span:
            self.total -= self.events.popleft()[1]
        return self.total + units

    def add(self, now: float, units: float) -> None:
        self.events.append((now, units))
        self.total += units


def _json(
    status: int, body: Mapping[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = error_body(
        status,
        code,
        message,
        messageWithParams=message,
        messageParams={},
        contextId=str(uuid.uuid4()),
        details=[],
        errors=[],
    )
    return _json(status, body, headers)


def _uuid4() -> str:
    """A random version-4 UUID without a system call (``uuid.uuid4`` reads os.urandom):
    message ids need to be unique, not unguessable."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeProvider:
    """``async with FakeProvider(config) as url:`` serves on 127.0.0.1 until the block ends."""

    def __init__(
        self,
        config: FakeConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or FakeConfig()
        self.host, self.port = host, port
        self.clock = clock
        self.faults = Faults()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        """Forget messages, counts, tokens and faults (not the configuration)."""
        self.faults = Faults()
        self.requests: list[Recorded] = []
        """Every agentless request that passed authentication, refused or not."""
        self._by_status: Counter[int] = Counter()
        """Kept as requests are recorded: benchmarks poll ``stats()`` during a long run."""
        self.token_requests = 0
        self.violations: Counter[str] = Counter()
        """``sender:<from>`` / ``client:<id>`` -> requests over the rate."""
        self._tokens: dict[str, tuple[str, float]] = {}
        self._sender_windows: dict[str, _Window] = {}
        self._client_windows: dict[str, _Window] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    # --- in-process queries ---------------------------------------------------------

    @property
    def messages(self) -> list[Recorded]:
        """Messages the fake accepted (HTTP 200), in arrival order."""
        return [r for r in self.requests if r.status == 200]

    def stats(self) -> dict[str, Any]:
        return {
            "requests": len(self.requests),
            "accepted": self._by_status[200],
            "token_requests": self.token_requests,
            "violations": dict(self.violations),
            "violation_total": sum(self.violations.values()),
            "by_status": {str(k): v for k, v in self._by_status.items() if v},
            "max_in_flight": self.max_in_flight,
        }

    def release(self) -> None:
        """Let every response held by ``Faults.slow_seconds = None`` go."""
        self._release.set()
        self._release = asyncio.Event()

    def revoke_tokens(self) -> None:
        """Every issued token now answers 401, as after a credential rotation."""
        self._tokens.clear()

    # --- lifecycle --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_post(AGENTLESS_PATH, self._agentless)
        app.router.add_get("/fake/messages", self._get_messages)
        app.router.add_get("/fake/stats", self._get_stats)
        app.router.add_post("/fake/faults", self._post_faults)
        app.router.add_post("/fake/reset", self._post_reset)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = int(port)
        self.url = f"http://{host}:{self.port}"
        log.info("fake provider listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the Genesys API -----------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.faults.token_errors > 0:
            self.faults.token_errors -= 1
            status = self.faults.token_status
            return _json(status, {"error": "server_error", "description": "injected"})
        client_id = self._basic_client(request.headers.get("Authorization", ""))
        if client_id is None:
            return _json(
                401,
                {
                    "error": "invalid_client",
                    "description": "client not found or bad secret",
                    "error_description": "client not found or bad secret",
                },
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type", "description": "grant_type"})
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (client_id, self.clock() + self.config.token_ttl)
        return _json(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": self.config.token_ttl},
        )

    def _basic_client(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.config.clients.get(client_id)
        ok = expected is not None and secrets.compare_digest(expected, secret)
        return client_id if ok else None

    def _bearer_client(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        entry = self._tokens.get(token)
        if entry is None or self.clock() >= entry[1]:
            return None
        return entry[0]

    async def _agentless(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._handle_agentless(request)
        finally:
            self.in_flight -= 1

    async def _handle_agentless(self, request: web.Request) -> web.Response:
        client_id = self._bearer_client(request.headers.get("Authorization", ""))
        if client_id is None:
            return _error(
                401,
                "authentication.required",
                "No authentication bearer token specified in authorization header.",
            )
        now = self.clock()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(
                400,
                "bad.request",
                "The request could not be understood by the server due to malformed syntax.",
            )
        if not isinstance(body, dict):
            return _error(400, "bad.request", "Expected a JSON object.")
        from_ = body.get("fromAddress")
        to = body.get("toAddress")
        text = body.get("textBody")
        kind = body.get("toAddressMessengerType")
        existing = bool(body.get("useExistingActiveConversation", False))
        s_from, s_to, s_text = (v if isinstance(v, str) else "" for v in (from_, to, text))

        def record(status: int, mid: str | None = None, violations: tuple[str, ...] = ()) -> None:
            self._by_status[status] += 1
            self.requests.append(
                Recorded(
                    len(self.requests),
                    now,
                    client_id,
                    s_from,
                    s_to,
                    s_text,
                    status,
                    mid,
                    existing,
                    violations,
                )
            )

        # The API client's budget counts every authenticated request, refused or not.
        violations: list[str] = []
        if self.config.client_limit is not None:
            win = self._client_windows.setdefault(
                client_id, _Window(self.config.client_window - self.config.client_jitter)
            )
            if win.would_hold(now, 1) > self.config.client_limit:
                violations.append(f"client:{client_id}")
                self.violations[f"client:{client_id}"] += 1
                if self.config.client_violation == "reject_429":
                    record(429, violations=tuple(violations))
                    retry = str(self.config.client_retry_after)
                    return _error(
                        429,
                        "too.many.requests",
                        "Rate limit exceeded the maximum.",
                        {"Retry-After": retry},
                    )
            win.add(now, 1)

        faults = self.faults
        if faults.throttle > 0:
            faults.throttle -= 1
            record(429)
            return _error(
                429,
                "too.many.requests",
                "Rate limit exceeded the maximum.",
                {"Retry-After": f"{faults.retry_after:g}"},
            )
        if faults.server_errors > 0:
            faults.server_errors -= 1
            record(faults.server_status)
            return _error(
                faults.server_status, "service.unavailable", "Service temporarily unavailable."
            )

        problem = self._validate(from_, to, text, kind)
        if problem is not None:
            record(400)
            return _error(400, *problem)

        units = float(segment_info(s_text).segments) if self.config.per_segment else 1.0
        senders = self.config.senders
        if senders is not None:
            win = self._sender_windows.setdefault(
                s_from, _Window(self.config.window - self.config.jitter)
            )
            if win.would_hold(now, units) > senders[s_from] * self.config.window + 1e-9:
                key = f"sender:{s_from}"
                violations.append(key)
                self.violations[key] += 1
                mode = self.config.sender_violation
                if mode != "record":
                    status = 400 if mode == "reject_400" else 429
                    record(status, violations=tuple(violations))
                    headers = {"Retry-After": "1"} if status == 429 else None
                    return _error(
                        status,
                        "messaging.rate.exceeded",
                        "The fromAddress is over its message rate.",
                        headers,
                    )
            win.add(now, units)

        # Recorded before any delay: a slow answer is still a sent text, as with Genesys,
        # which is why a client-side read timeout is an ambiguous outcome.
        mid, conv = _uuid4(), _uuid4()
        record(200, mid, tuple(violations))
        if faults.slow > 0:
            faults.slow -= 1
            if faults.slow_seconds is None:
                await self._release.wait()
            else:
                await asyncio.sleep(faults.slow_seconds)
        stamp = _iso(datetime.now(UTC))
        return _json(
            200,
            {
                "id": mid,
                "conversationId": conv,
                "fromAddress": s_from,
                "toAddress": s_to,
                "messengerType": "sms",
                "textBody": s_text,
                "useExistingActiveConversation": existing,
                "timestamp": stamp,
                "selfUri": f"/api/v2/conversations/messages/{conv}/messages/{mid}",
                "user": {"id": client_id, "selfUri": f"/api/v2/users/{client_id}"},
                "message": {
                    "id": mid,
                    "timestamp": stamp,
                    "fromAddress": s_from,
                    "toAddress": s_to,
                    "direction": "outbound",
                    "messengerType": "sms",
                    "status": "queued",
                    "conversationId": conv,
                    "selfUri": f"/api/v2/conversations/messages/{conv}/messages/{mid}",
                },
            },
        )

    def _validate(self, from_: Any, to: Any, text: Any, kind: Any) -> tuple[str, str] | None:
        """(code, message) of the first thing wrong with the request, like Genesys's 400s."""
        for name, value in (("fromAddress", from_), ("toAddress", to), ("textBody", text)):
            if not isinstance(value, str) or not value:
                return "bad.request", f"{name} is required"
        if kind not in _MESSENGER_TYPES:
            return "bad.request", "toAddressMessengerType must be one of " + ", ".join(
                _MESSENGER_TYPES
            )
        if kind != "sms":
            return "bad.request", "this fake only sends sms"
        assert isinstance(from_, str) and isinstance(to, str) and isinstance(text, str)  # noqa: S101
        if len(text) > MAX_SMS_TEXT:
            return "messaging.text.too.long", f"textBody is longer than {MAX_SMS_TEXT} characters"
        senders = self.config.senders
        if from_ in self.faults.unregistered or (senders is not None and from_ not in senders):
            return (
                "messaging.address.not.provisioned",
                f"The fromAddress {from_} is not a provisioned SMS number",
            )
        if not _E164.fullmatch(to):
            return "messaging.address.invalid", f"The toAddress {to} is not a valid E.164 number"
        if to in self.faults.reject_numbers:
            return self.faults.reject_numbers[to], f"The message to {to} was rejected"
        return None

    # --- control endpoints --------------------------------------------------------------

    async def _get_messages(self, request: web.Request) -> web.Response:
        want_from, want_to = request.query.get("from"), request.query.get("to")
        everything = request.query.get("all") == "1"
        rows = [
            r.to_json()
            for r in (self.requests if everything else self.messages)
            if (want_from is None or r.from_ == want_from) and (want_to is None or r.to == want_to)
        ]
        return _json(200, {"messages": rows})

    async def _get_stats(self, _: web.Request) -> web.Response:
        return _json(200, self.stats())

    async def _post_faults(self, request: web.Request) -> web.Response:
        """Set fault fields by name, e.g. ``{"throttle": 5, "retry_after": 2}``."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json(400, {"error": "malformed JSON"})
        if not isinstance(body, dict):
            return _json(400, {"error": "expected an object"})
        known = set(Faults.__dataclass_fields__)
        unknown = set(body) - known - {"revoke_tokens", "release"}
        if unknown:
            return _json(400, {"error": f"unknown fault fields: {sorted(unknown)}"})
        for name, value in body.items():
            if name == "revoke_tokens":
                if value:
                    self.revoke_tokens()
            elif name == "release":
                if value:
                    self.release()
            elif name == "unregistered":
                self.faults.unregistered = set(value)
            else:
                setattr(self.faults, name, value)
        faults = asdict(self.faults)
        faults["unregistered"] = sorted(self.faults.unregistered)
        return _json(200, faults)

    async def _post_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return _json(200, {"reset": True})


def _parse_sender(text: str) -> tuple[str, float]:
    address, sep, rate = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("use ADDRESS=RATE, e.g. +14155550100=1")
    return address, float(rate)


def _parse_client(text: str) -> tuple[str, str]:
    client_id, sep, secret = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError("use ID:SECRET")
    return client_id, secret


async def _serve(provider: FakeProvider) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with provider as url:
        # stdout carries only the URL, so scripts can read it; the rest goes to stderr.
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m outage_sms.fake_provider",
        description="A fake Genesys Cloud SMS API on loopback; prints its base URL.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--sender",
        action="append",
        type=_parse_sender,
        default=[],
        metavar="ADDRESS=RATE",
        help="a provisioned fromAddress and its rate per second (repeat); none: any, unlimited",
    )
    parser.add_argument(
        "--client",
        action="append",
        type=_parse_client,
        default=[],
        metavar="ID:SECRET",
        help="an OAuth client (repeat); default fake-client:fake-secret",
    )
    parser.add_argument("--per-segment", action="store_true", help="rates count segments")
    parser.add_argument(
        "--client-limit", type=int, default=300, help="requests per minute; 0: none"
    )
    parser.add_argument(
        "--sender-violation", choices=["record", "reject_400", "reject_429"], default="record"
    )
    parser.add_argument(
        "--client-violation", choices=["record", "reject_429"], default="reject_429"
    )
    parser.add_argument("--token-ttl", type=int, default=86_400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    config = FakeConfig(
        clients=dict(args.client) or {"fake-client": "fake-secret"},
        senders=dict(args.sender) or None,
        per_segment=args.per_segment,
        client_limit=args.client_limit or None,
        sender_violation=args.sender_violation,
        client_violation=args.client_violation,
        token_ttl=args.token_ttl,
    )
    run_fast(_serve(FakeProvider(config, args.host, args.port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
