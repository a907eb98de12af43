"""All configuration, from environment variables with an ``OUTAGE_SMS_`` prefix.

Built once in :func:`topology.app.create_app`, never read at import time. Raising
``app_version`` gives Faust new table and changelog names: the worker then starts with
EMPTY tables (customers, opt-outs) until they are rebuilt, so do it only on purpose.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.content import DEFAULT_FORBIDDEN, DEFAULT_SHORTENERS
from streams.keywords import (
    DEFAULT_HELP,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    DEFAULT_OPT_OUT_ALL,
    DEFAULT_STATUS,
)

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OUTAGE_SMS_", extra="ignore", populate_by_name=True
    )

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "OUTAGE_SMS_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]. Unset: the worker starts the embedded Tansu broker.",
    )
    broker_kind: Literal["kafka", "tansu"] = Field(
        default="kafka",
        description="What the broker is: 'tansu' shortens group timeouts (its JoinGroup waits "
        "half the session timeout) and never uses transactions.",
    )
    app_id: str = Field(default="outage-sms", description="Faust app id and consumer group.")
    app_version: int = Field(default=1, description="Faust table version; see module docs.")
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    partitions: int = Field(
        default=8,
        ge=1,
        description="Partitions of every topic this app creates. Phone-keyed topics and "
        "table changelogs are co-partitioned and must all have this count.",
    )
    replication_factor: int = Field(default=1, ge=1)

    topic_outage_events: str = "outage.events"
    topic_customer_regions: str = "customer.regions"
    topic_inbound: str = "sms.inbound"
    topic_send_commands: str = "sms.send-commands"
    topic_delivery_status: str = "sms.delivery-status"
    topic_audit: str = "sms.audit"
    dlq_suffix: str = Field(default=".dlq", description="Dead-letter topic: <input><suffix>.")

    store: str = Field(
        default="rocksdb://",
        description="Table store: rocksdb:// (persistent, rocksdict) or memory:// (tests).",
    )
    data_dir: Path = Field(default=Path("var/outage-sms"), description="RocksDB and Faust data.")
    rocksdb_block_cache_mb: int = Field(
        default=64, ge=1, description="Per-partition block cache (Faust's default is 2 GiB)."
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once needs Apache Kafka; deterministic ids are the real guarantee.",
    )
    max_record_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Larger input values go to the DLQ."
    )
    retention_days: int = Field(default=7, ge=1, description="Retention of non-compacted topics.")

    program_name: str = Field(
        default="Outage Alerts", description="Who the texts are from; starts every message."
    )
    senders: str = Field(
        default='[{"id": "87654", "type": "short_code", "rate": 100, "countries": ["US", "CA"]}]',
        description="Sender pool, JSON list of {id, type (long_code, 10dlc, toll_free, "
        "short_code, alphanumeric), rate (per second), countries, status (active, pending, "
        "suspended), per_segment, daily_cap}. Only active senders are used.",
    )
    quiet_hours: str = Field(
        default="21:00-08:00",
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="Recipient-local quiet hours; updates and restored texts wait until the end.",
    )
    quiet_hours_alerts: Literal["send", "defer"] = Field(
        default="send",
        description="Whether quiet hours also hold back the first alert of a service outage "
        "(life-safety alerts always go at once).",
    )
    eta_change_minutes: int = Field(
        default=30, ge=0, description="An ETA move larger than this is worth an update text."
    )
    command_ttl_hours: float = Field(
        default=12.0, gt=0, description="A command not sent by then expires."
    )
    default_timezone: str = Field(
        default="UTC", description="Zone for quiet hours when neither record nor number has one."
    )
    forbidden_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORBIDDEN),
        description="JSON list; outage text containing one is dead-lettered.",
    )
    url_shorteners: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SHORTENERS),
        description="JSON list of hosts; links through them are dead-lettered.",
    )
    fanout_warn_hours: float = Field(
        default=4.0, gt=0, description="Warn when a fan-out's projected completion exceeds this."
    )
    fanout_connections: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Producer connections the fan-out writes over. aiokafka has one request "
        "in flight per connection, and a fan-out writes one partition at a time: with one, "
        "it waited a broker round trip for every batch. Each one more costs memory (1M "
        "customers on Kafka: 1,451 MiB RSS with 1, 1,513 with 2, 1,539 with 3).",
    )

    support_contact: str = Field(
        default="call 1-800-555-0100",
        description="How customers reach a person; the HELP reply names it. Set your own.",
    )
    optout_scope: Literal["sender", "program"] = Field(
        default="sender",
        description="'sender': STOP applies to the number it was sent to (STOPALL to every "
        "sender), as Genesys keeps a DNC list per SMS number; 'program': every opt-out "
        "applies to every sender.",
    )
    keywords_opt_out: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPT_OUT),
        description="JSON list; a text that is exactly one of these opts out of that sender.",
    )
    keywords_opt_out_all: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPT_OUT_ALL),
        description="JSON list; opt out of every sender.",
    )
    keywords_opt_in: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_IN))
    keywords_help: list[str] = Field(default_factory=lambda: list(DEFAULT_HELP))
    keywords_status: list[str] = Field(default_factory=lambda: list(DEFAULT_STATUS))
    revocation_phrases: bool = Field(
        default=True,
        description="Treat clear revocation in plain words ('stop texting me') as an opt-out "
        "(the FCC's 2024 order: consent may be revoked in any reasonable manner).",
    )
    loop_max_inbound: int = Field(
        default=10,
        ge=1,
        description="More texts than this from one number in the loop window "
        "start a cool-down (Twilio's own wall is 30 in 30 s).",
    )
    loop_window_seconds: float = Field(default=60.0, gt=0)
    loop_max_repeats: int = Field(
        default=3, ge=2, description="The same body this often in the repeat window is a loop."
    )
    loop_repeat_window_seconds: float = Field(default=300.0, gt=0)
    loop_cooldown_minutes: float = Field(
        default=30.0, gt=0, description="No automated reply to a looping number for this long."
    )
    reply_max_per_hour: int = Field(
        default=6, ge=1, description="Automated replies to one number per hour, whatever the cause."
    )
    reply_ttl_minutes: float = Field(
        default=60.0, gt=0, description="A reply not sent by then expires: late answers mislead."
    )
    status_restored_hours: float = Field(
        default=24.0, gt=0, description="How long after resolution STATUS answers 'restored'."
    )
    menu_every_hours: float = Field(
        default=24.0,
        ge=0,
        description="The keyword menu for unrecognised texts, at most this often.",
    )

    genesys_client_id: str | None = Field(
        default=None, description="OAuth client-credentials client id (Genesys Cloud)."
    )
    genesys_client_secret: str | None = Field(default=None, repr=False)
    genesys_region: str = Field(
        default="mypurecloud.com",
        description="The org's region domain: mypurecloud.com, mypurecloud.ie, euw2.pure.cloud.",
    )
    genesys_api_url: str | None = Field(
        default=None, description="Overrides https://api.<region> (a proxy, the fake provider)."
    )
    genesys_login_url: str | None = Field(
        default=None, description="Overrides https://login.<region>."
    )
    client_requests_per_minute: int = Field(
        default=300,
        ge=2,
        description="Requests a minute this dispatcher makes on its OAuth client (Genesys "
        "allows about 300 per client): give each dispatcher its own client, or a share.",
    )
    dispatch_concurrency: int = Field(
        default=64,
        ge=1,
        description="Provider requests in flight at once, per dispatcher. A dispatcher sends "
        "at most this many divided by the provider's round-trip time per second (16 at "
        "150 ms is about 107/s); the lean HTTP transport costs nothing per idle connection.",
    )
    dispatch_read_ahead: int = Field(
        default=20_000,
        ge=100,
        description="Commands held in memory per dispatch partition before reading pauses.",
    )
    dispatch_metrics_port: int = Field(
        default=0,
        ge=0,
        description="Serve /metrics (Prometheus) and /health on this port; 0: off.",
    )
    replies_batch: bool = Field(
        default=True,
        description="Handle inbound texts a batch at a time on Apache Kafka with "
        "at-least-once processing (topology/replies_batch.py, about a third of the CPU per "
        "text); false: Faust's per-event path. Tansu and exactly-once always take the "
        "per-event path.",
    )
    inbound_direct: bool = Field(
        default=True,
        description="With the batch path: read sms.inbound with a plain aiokafka consumer on "
        "the partitions Faust assigns (topology/inbound_reader.py, about half the CPU per "
        "text of Faust's stream); false: through Faust's stream.",
    )
    sender_rate_share: float = Field(
        default=0.97,
        gt=0,
        le=1,
        description="Fraction of each sender's rate the dispatcher paces at: network jitter "
        "bunches requests on arrival, and the carrier counts arrivals.",
    )
    group_session_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Consumer group session timeout (worker and dispatcher); a member killed "
        "without leaving holds its partitions this long. Default: 30 on Kafka, 6 on Tansu.",
    )
    commit_interval_seconds: float = Field(
        default=2.8,
        gt=0,
        description="How often the worker commits its input offsets (Faust's "
        "broker_commit_interval, and the inbound reader's); a crash redoes at most about "
        "this much input, with the same decisions and command ids.",
    )
    consumer_fetch_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=60_000,
        description="Longest the broker may hold the worker's empty fetch once its tables are "
        "recovered (Faust's 1500 during a rebalance and recovery). Default: Faust's 1500 on "
        "Kafka (it answers as soon as a record arrives), 50 on Tansu (it waits the full "
        "time: every hop of the pipeline took up to that long).",
    )
    sender_burst: float = Field(
        default=1.0,
        ge=1.0,
        description="Units a sender may send at once after idling; 1 paces strictly.",
    )

    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The worker's event loop: uvloop (when installed; a 300,000-customer "
        "fan-out ran +15% and +11% on it in two alternated pairs) or asyncio's.",
    )
    web_enabled: bool = Field(default=False, description="Serve Faust's web server.")
    web_port: int = 6066
    log_level: str = "INFO"

    def quiet_window(self) -> tuple[time, time]:
        start, end = self.quiet_hours.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)

    def topic_name(self, base: str) -> str:
        return f"{self.topic_prefix}{base}"

    @property
    def faust_id(self) -> str:
        """Faust's app id; also the prefix of its changelog topics."""
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def changelog_prefix(self) -> str:
        """Faust names changelogs ``<id>[-v<version>]-<table>-changelog``."""
        return self.faust_id if self.app_version <= 1 else f"{self.faust_id}-v{self.app_version}"

    def fetch_wait_ms(self) -> int | None:
        """The worker consumer's fetch wait, or None for Faust's own (topology.fetch_wait)."""
        if self.consumer_fetch_wait_ms is not None:
            return self.consumer_fetch_wait_ms
        return 50 if self.broker_kind == "tansu" else None

    def group_timeouts(self) -> tuple[float, float, float]:
        """(session, heartbeat, rebalance) seconds for consumer groups."""
        session, heartbeat, rebalance = (
            (6.0, 1.0, 6.0) if self.broker_kind == "tansu" else (30.0, 3.0, 60.0)
        )
        if self.group_session_seconds is not None:
            session = self.group_session_seconds
            heartbeat = min(heartbeat, session / 3)
        return session, heartbeat, rebalance
