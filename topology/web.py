"""The worker's web endpoints (Faust web, aiohttp): status look-up, ingress, health.

Thin wiring: authentication, body parsing and the answers live in ``streams.ingress`` and
``streams.status_answer``; this module reads bodies (size-limited), finds the worker that
owns a number, reads its tables and publishes. Endpoints (``docs/openapi.yaml``):

- ``GET /health``: the process serves HTTP (no authentication, no data).
- ``GET /ready``: the worker holds an assignment with its tables recovered.
- ``POST /v1/status``: a Genesys Data Action asks about one number.
- ``POST /v1/inbound``, ``POST /v1/inbound/twilio``: a customer's text -> ``sms.inbound``.
- ``POST /v1/receipts``, ``POST /v1/receipts/twilio``: a carrier receipt ->
  ``sms.delivery-status``, linked to our command.
- ``POST /internal/v1/status``, ``POST /internal/v1/receipt-link``: one worker asking the
  worker that owns a number's partition.

Routing: a number's facts (subscriber, opt-out, the partition's outage copies, receipt
links) live on the worker owning its partition, ``murmur2(phone) % partitions`` (the
phone-keyed topics' partitioner). Faust's own ``@app.table_route`` hashes the table's
*serialised* key (JSON, with quotes), which lands on another partition than the raw
phone key the agents consume, and forwards neither the body nor a timeout; so the owner
is looked up here in the assignor's table map and asked over HTTP with the body.

Tables are written only by agents: web handlers read them, and publish to topics.
Records go out through a plain producer of their own, not Faust's, so a web request
never joins (or aborts) a partition's transaction under ``exactly_once``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from faust.types import TP, EventT
from faust.web import View
from yarl import URL

from schemas import AuditRecord, DeliveryStatus
from streams.errors import ConfigurationError
from streams.fanout import subscriber_from_state
from streams.ingress import (
    BadRequest,
    Credentials,
    Link,
    Receipt,
    StatusQuery,
    inbound_from_json,
    inbound_from_twilio,
    link_for,
    linked_status,
    parse_form,
    parse_json_object,
    receipt_from_json,
    receipt_from_twilio,
    remember_link,
    status_query,
    twilio_signature_valid,
)
from streams.masking import mask_phone
from streams.replies import ReplyRules
from streams.reply_texts import ReplyTexts
from streams.status_answer import answer_status

from .topics import Role
from .views import phone_partition
from .web_settings import WebSettings

if TYPE_CHECKING:
    from .app import OutageSmsApp

__all__ = ["ANSWERED_BY", "PATHS", "WebRuntime", "register_web"]

log = logging.getLogger(__name__)

PATHS = {
    "health": "/health",
    "ready": "/ready",
    "metrics": "/metrics",
    "status": "/v1/status",
    "inbound": "/v1/inbound",
    "inbound_twilio": "/v1/inbound/twilio",
    "receipts": "/v1/receipts",
    "receipts_twilio": "/v1/receipts/twilio",
    "internal_status": "/internal/v1/status",
    "internal_link": "/internal/v1/receipt-link",
}
#: Faust's built-in pages: ``/table`` would hand out any customer's record unauthenticated.
_FAUST_PAGES = (
    "web_router_enabled",
    "web_tables_enabled",
    "web_graph_enabled",
    "web_stats_enabled",
    "web_metrics_enabled",
)
#: Response header naming the worker that answered a status look-up (its canonical URL).
ANSWERED_BY = "X-Outage-Sms-Answered-By"
_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotReady(Exception):
    """The answer needs a worker that is not serving yet (rebalance, recovery, peer down)."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


class _Publisher:
    """One plain producer for every web request, started on first use."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        """Returns once the broker has the record: only then does the caller answer 2xx."""
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self._bootstrap,
                        client_id="outage-sms-web",
                        acks="all",
                        request_timeout_ms=10_000,
                    )
                    await producer.start()
                    self._producer = producer
        await self._producer.send_and_wait(topic, value, key=key, partition=partition)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class WebRuntime:
    """Everything a request handler needs, built once per app."""

    def __init__(
        self, built: OutageSmsApp, web_settings: WebSettings, texts: ReplyTexts, rules: ReplyRules
    ) -> None:
        self.built = built
        self.app = built.faust_app
        self.settings = built.settings
        self.web = web_settings
        self.creds: Credentials = web_settings.credentials()
        self.texts = texts
        self.rules = rules
        self.publisher = _Publisher(built.settings.bootstrap_servers or "")
        self.subscribers = built.tables["subscribers"]
        self.optouts = built.tables["optouts"]
        self.area_outages = built.tables["area_outages"]
        self.links = built.tables["receipt_links"]
        self.changelog = self.subscribers.changelog_topic.get_topic_name()

    @property
    def me(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    # --- who owns a number -----------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, "rebalancing"
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]  # the manager has it
        if not recovery.completed.is_set() or app.in_recovery:
            return False, "recovering tables"
        return True, "ready"

    def partitions_here(self) -> list[int]:
        """The number partitions this worker answers for (operators and tests)."""
        return sorted(
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.changelog
        )

    def owner(self, phone: str) -> str | None:
        """None when this worker owns the number's partition, else the owner's base URL."""
        ready, why = self.readiness()
        if not ready:
            raise NotReady(why)
        partition = phone_partition(phone.encode(), self.settings.partitions)
        if self.app.assignor.is_active(TP(self.changelog, partition)):
            return None
        for url, topics in self.app.assignor.tables_metadata().items():
            if partition in (topics.get(self.changelog) or ()) and url.rstrip("/") != self.me:
                return str(url).rstrip("/")
        raise NotReady(f"no worker owns partition {partition} yet")

    async def ask_owner(self, base: str, path: str, payload: dict[str, Any]) -> web.Response:
        """The owner's answer, status and body as it gave them."""
        timeout = aiohttp.ClientTimeout(
            total=self.web.web_forward_timeout_seconds + self.web.web_receipt_link_wait_seconds
        )
        headers = {**self.creds.outgoing(), "Content-Type": "application/json"}
        try:
            async with self.app.http_client.post(
                base + path, data=orjson.dumps(payload), headers=headers, timeout=timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
                answered_by = resp.headers.get(ANSWERED_BY, base)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotReady(f"owner unreachable: {type(exc).__name__}") from None
        return web.Response(
            body=body,
            status=status,
            content_type="application/json",
            headers={ANSWERED_BY: answered_by},
        )

    # --- local answers ---------------------------------------------------------------

    def status_here(self, query: StatusQuery) -> dict[str, Any]:
        areas = self.built.areas
        if areas is None:  # pragma: no cover  (create_app always builds it)
            raise NotReady("no outage view")
        if not areas.built:
            areas.build(self.area_outages.items())
        phone = query.phone
        state = self.subscribers.get(phone)
        answer = answer_status(
            query.sender,
            subscriber_from_state(phone, state) if state else None,
            self.optouts.get(phone),
            areas.outages_for(phone_partition(phone.encode(), self.settings.partitions)),
            self.texts,
            self.rules,
            datetime.now(UTC),
        )
        return answer.to_json()

    async def link_here(self, phone: str, provider_message_id: str, wait: float) -> Link | None:
        """Wait a little for the link: the receipt can beat the dispatcher's record of it."""
        deadline = time.monotonic() + wait
        while True:
            link = link_for(self.links.get(phone), provider_message_id)
            if link is not None or time.monotonic() >= deadline:
                return link
            await asyncio.sleep(0.05)

    async def find_link(self, receipt: Receipt) -> Link | None:
        base = self.owner(receipt.phone)
        wait = self.web.web_receipt_link_wait_seconds
        if base is None:
            return await self.link_here(receipt.phone, receipt.provider_message_id, wait)
        resp = await self.ask_owner(
            base,
            PATHS["internal_link"],
            {"phone": receipt.phone, "provider_message_id": receipt.provider_message_id},
        )
        if resp.status != 200 or resp.body is None:
            raise NotReady(f"owner answered {resp.status}")
        entry = orjson.loads(bytes(resp.body)).get("link")  # type: ignore[arg-type]
        return Link(*entry) if entry else None

    # --- publishing ------------------------------------------------------------------

    async def publish(self, role: Role, phone: str, value: bytes) -> None:
        partition = phone_partition(phone.encode(), self.settings.partitions)
        await self.publisher.send(self.built.registry[role].name, phone.encode(), value, partition)

    async def settle(self, receipt: Receipt) -> dict[str, Any]:
        link = None if receipt.command_id else await self.find_link(receipt)
        status = linked_status(receipt, link)
        if status is None:
            # Not a bad request: a receipt for a message whose link aged out, or not ours.
            # Auditors see it; sms.delivery-status carries only receipts tied to a command.
            record = AuditRecord(
                audit_id=f"receipt:{receipt.provider}:{receipt.provider_message_id}:unlinked",
                decision="receipt_unlinked",
                phone=receipt.phone,
                facts={
                    "provider": receipt.provider,
                    "provider_message_id": receipt.provider_message_id,
                    "outcome": receipt.outcome.value,
                    "error_code": receipt.error_code,
                },
                at=receipt.at,
            )
            await self.publish(Role.AUDIT, receipt.phone, record.to_bytes())
            log.warning(
                "receipt %s for %s matches no command: audited as receipt_unlinked",
                receipt.provider_message_id,
                mask_phone(receipt.phone),
            )
            return {"accepted": True, "linked": False, "command_id": ""}
        await self.publish(Role.DELIVERY_STATUS, receipt.phone, status.to_bytes())
        log.info(
            "receipt %s: %s %s for %s",
            receipt.provider_message_id,
            status.command_id,
            status.outcome.value,
            mask_phone(receipt.phone),
        )
        return {"accepted": True, "linked": True, "command_id": status.command_id}

    # --- request plumbing ------------------------------------------------------------

    async def body(self, request: web.Request, kind: str) -> bytes:
        """At most ``web_max_body_bytes``, read in chunks: a liar's Content-Length or a
        chunked upload cannot make us buffer more."""
        limit = self.web.web_max_body_bytes
        ctype = request.content_type
        if ctype != kind:
            raise BadRequest(415, "unsupported_media_type", f"send Content-Type: {kind}")
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, "too_large", f"body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "too_large", f"body larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def authenticate(self, request: web.Request) -> None:
        if self.web.web_demo and not self.creds.configured:
            return
        if not self.creds.authorized(request.headers):
            raise BadRequest(401, "unauthorized", "missing or wrong credentials")

    def twilio_form(self, request: web.Request, raw: bytes) -> dict[str, list[str]]:
        form = parse_form(raw)
        token = self.web.twilio_token()
        if token is None:
            if self.web.web_demo:
                return form
            raise BadRequest(403, "twilio_not_configured", "OUTAGE_SMS_TWILIO_AUTH_TOKEN unset")
        public = self.web.web_public_url
        url = public.rstrip("/") + str(request.rel_url) if public else str(request.url)
        if not twilio_signature_valid(
            token,
            url,
            form,
            request.headers.get("X-Twilio-Signature"),
            request.headers.get("X-Twilio-Webhooks-Signature-Settings"),
        ):
            raise BadRequest(403, "bad_signature", "X-Twilio-Signature does not match")
        return form


def _guard(fun: Handler) -> Handler:
    """Every refusal as JSON with its status; a bug answers 500 and logs no body."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await fun(request)
        except BadRequest as exc:
            headers = (
                {"WWW-Authenticate": 'Basic realm="outage-sms"'} if exc.status == 401 else None
            )
            return _json(exc.body(), exc.status, headers)
        except NotReady as exc:
            body = {"error": "not_ready", "message": str(exc)}
            return _json(body, 503, {"Retry-After": "1"})
        except Exception:
            log.exception("web handler %s failed", request.path)
            return _json({"error": "internal", "message": "internal error"}, 500)

    return handle


def _page(app: Any, path: str, method: str, fun: Handler) -> None:
    """A Faust view answering ``method`` at ``path`` (others get Faust's 405)."""
    guarded = _guard(fun)

    async def call(view: Any, request: web.Request) -> web.StreamResponse:
        return await guarded(request)

    name = "outage_sms_" + path.strip("/").replace("/", "_").replace("-", "_")
    app.page(path, name=name)(type(name, (View,), {method: call, "__module__": __name__}))


_HELP = {
    "fanout_decisions": "Fan-out decisions: targeted:- (now), targeted:<why>, suppressed:<why>.",
    "inbound_texts": "Inbound texts by what they asked for.",
    "dead_letters": "Input records dead-lettered, by reason.",
}


def worker_metrics(built: OutageSmsApp) -> str:
    """Prometheus text: decisions by kind and reason, inbound intents, dead letters, and
    each assigned input partition's lag (high watermark minus committed offset)."""
    lines: list[str] = []
    for metric in _HELP:
        name = f"outage_sms_{metric}_total"
        lines += [f"# HELP {name} {_HELP[metric]}", f"# TYPE {name} counter"]
        for (m, label, value), n in sorted(built.counts.items()):
            if m == metric:
                lines.append(f'{name}{{{label}="{value}"}} {n}')
    lines += [
        "# HELP outage_sms_consumer_lag Records not yet committed, per input partition.",
        "# TYPE outage_sms_consumer_lag gauge",
    ]
    consumer = built.faust_app.consumer
    committed = getattr(consumer, "_committed_offset", {})  # Faust keeps it private
    reader = built.inbound_reader
    direct = reader.lag() if reader is not None else {}
    for tp in sorted(consumer.assignment()):
        if tp.topic.endswith("-changelog"):
            continue
        if tp in direct:  # read by the inbound reader, not by Faust's consumer
            lines.append(
                f'outage_sms_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}} '
                f"{direct[tp]}"
            )
            continue
        high = consumer.highwater(tp)
        done = committed.get(tp)
        if high is not None:
            lag = max(0, high - (done or 0))
            lines.append(
                f'outage_sms_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}} {lag}'
            )
    return "\n".join(lines) + "\n"


def register_web(
    built: OutageSmsApp,
    texts: ReplyTexts,
    rules: ReplyRules,
    web_settings: WebSettings | None = None,
) -> WebRuntime:
    """The receipt-link agent always (its table must not depend on whether this worker
    serves HTTP), the web pages when ``OUTAGE_SMS_WEB_ENABLED``."""
    ws = web_settings or WebSettings()
    app = built.faust_app
    conf = app.conf
    for flag in _FAUST_PAGES:
        setattr(conf, flag, False)
    rt = WebRuntime(built, ws, texts, rules)
    links = rt.links

    # Keyed by recipient phone (the dispatcher's records): beside the phone-keyed tables.
    @app.agent(built.topics[Role.DELIVERY_STATUS], name="receipt_linker")
    async def receipt_linker(stream: Any) -> None:
        async for event in stream.events():
            _remember(event)

    def _remember(event: EventT[Any]) -> None:
        if not event.key:
            return
        phone = bytes(event.key).decode()
        try:
            status = DeliveryStatus.from_bytes(event.value)
        except ValueError as exc:  # pydantic's and orjson's errors both are
            log.warning("delivery status %s unreadable: %s", mask_phone(phone), type(exc).__name__)
            return
        new = remember_link(
            links.get(phone), status, event.message.partition, ws.web_receipt_links_kept
        )
        if new is not None:
            links[phone] = new

    if not built.settings.web_enabled:
        return rt
    if not rt.creds.configured and not ws.web_demo:
        raise ConfigurationError(
            "the web server needs credentials: set OUTAGE_SMS_WEB_SECRET, or "
            "OUTAGE_SMS_WEB_BASIC_USER and OUTAGE_SMS_WEB_BASIC_PASSWORD "
            "(or OUTAGE_SMS_WEB_DEMO=true for a demo without authentication)"
        )
    if ws.web_demo:
        log.warning("web server in DEMO mode: endpoints without credentials are open")
    conf.web_bind = ws.web_bind
    if ws.web_host:
        conf.web_host = ws.web_host
        conf.canonical_url = URL(f"http://{ws.web_host}:{built.settings.web_port}")

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub is narrower
    async def _stop_publisher(sender: Any, *args: Any, **kwargs: Any) -> None:
        await rt.publisher.stop()

    async def health(request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok"})

    async def ready(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        ok, why = rt.readiness()
        body = {"ready": ok, "reason": why, "partitions": rt.partitions_here()}
        return _json(body, 200 if ok else 503)

    async def metrics(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        return web.Response(text=worker_metrics(built), content_type="text/plain")

    async def status(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        query = status_query(parse_json_object(await rt.body(request, "application/json")))
        base = rt.owner(query.phone)
        if base is None:
            return _json(rt.status_here(query), headers={ANSWERED_BY: rt.me})
        payload = {"phone": query.phone, "sender": query.sender or ""}
        return await rt.ask_owner(base, PATHS["internal_status"], payload)

    async def internal_status(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        query = status_query(parse_json_object(await rt.body(request, "application/json")))
        if rt.owner(query.phone) is not None:
            raise NotReady("this worker no longer owns the number")  # moved: caller retries
        return _json(rt.status_here(query), headers={ANSWERED_BY: rt.me})

    async def internal_link(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        obj = parse_json_object(await rt.body(request, "application/json"))
        phone, pmid = str(obj.get("phone") or ""), str(obj.get("provider_message_id") or "")
        if rt.owner(phone) is not None:
            raise NotReady("this worker no longer owns the number")
        link = await rt.link_here(phone, pmid, ws.web_receipt_link_wait_seconds)
        entry = None
        if link is not None:
            entry = [link.command_id, link.kind, link.outage_id, link.outage_version, link.sender]
        return _json({"link": entry})

    async def inbound(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        obj = parse_json_object(await rt.body(request, "application/json"))
        sms = inbound_from_json(obj, datetime.now(UTC))
        await rt.publish(Role.INBOUND, sms.from_, sms.to_bytes())
        log.info("inbound %s from %s accepted", sms.message_id, mask_phone(sms.from_))
        return _json({"accepted": True, "message_id": sms.message_id}, 202)

    async def inbound_twilio(request: web.Request) -> web.StreamResponse:
        form = rt.twilio_form(request, await rt.body(request, "application/x-www-form-urlencoded"))
        sms = inbound_from_twilio(form, datetime.now(UTC))
        await rt.publish(Role.INBOUND, sms.from_, sms.to_bytes())
        log.info("inbound %s from %s accepted (twilio)", sms.message_id, mask_phone(sms.from_))
        # Empty TwiML: the answer, if any, goes out as a send command like every reply.
        return web.Response(text=_TWIML_EMPTY, content_type="text/xml")

    async def receipts(request: web.Request) -> web.StreamResponse:
        rt.authenticate(request)
        obj = parse_json_object(await rt.body(request, "application/json"))
        return _json(await rt.settle(receipt_from_json(obj, datetime.now(UTC))), 202)

    async def receipts_twilio(request: web.Request) -> web.StreamResponse:
        form = rt.twilio_form(request, await rt.body(request, "application/x-www-form-urlencoded"))
        receipt = receipt_from_twilio(form, request.query.get("command_id"), datetime.now(UTC))
        if receipt is None:
            return _json({"accepted": True, "linked": False, "command_id": "", "final": False})
        return _json(await rt.settle(receipt), 202)

    _page(app, PATHS["health"], "get", health)
    _page(app, PATHS["ready"], "get", ready)
    _page(app, PATHS["metrics"], "get", metrics)
    _page(app, PATHS["status"], "post", status)
    _page(app, PATHS["internal_status"], "post", internal_status)
    _page(app, PATHS["internal_link"], "post", internal_link)
    _page(app, PATHS["inbound"], "post", inbound)
    _page(app, PATHS["inbound_twilio"], "post", inbound_twilio)
    _page(app, PATHS["receipts"], "post", receipts)
    _page(app, PATHS["receipts_twilio"], "post", receipts_twilio)
    return rt
