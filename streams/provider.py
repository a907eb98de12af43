"""The SMS provider interface: one call, four outcomes the dispatcher can act on.

A provider client turns HTTP (or SDK) outcomes into one of four results, so the retry
policy in ``streams.dispatch`` never sees a status code or an exception type:

- ``Accepted``: the provider took the message (its id, for delivery receipts);
- ``RetryAfter``: throttled (HTTP 429); try again no sooner than ``seconds``;
- ``Transient``: 5xx, timeout, connection failure; retry with backoff. ``ambiguous``
  says the request may have reached the provider (a read timeout), so a retry may text
  the customer twice: providers have no idempotency key;
- ``Permanent``: this message can never succeed (invalid number, unregistered sender),
  with the provider's code and reason.

``send`` returns these and does not raise for anything the provider or the network does
to one message. It raises ``ConfigurationError`` when no message can succeed (bad
credentials, missing permission): failing every queued message would be wrong, so the
worker stops without committing instead (see ``streams.errors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Accepted",
    "OutboundMessage",
    "Permanent",
    "Provider",
    "ProviderResult",
    "RetryAfter",
    "Transient",
]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What every provider needs; ``command_id`` is for logs and correlation only."""

    command_id: str
    from_: str
    to: str
    body: str


@dataclass(frozen=True, slots=True)
class Accepted:
    provider_message_id: str | None
    """None only when the provider said yes (2xx) without an id: still sent, not retried."""
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetryAfter:
    seconds: float
    status: int = 429
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Transient:
    reason: str
    """``http_503``, ``timeout``, ``connect_error``, ...: short and stable, for metrics."""
    status: int | None = None
    detail: str | None = None
    ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class Permanent:
    code: str
    """The provider's error code when it gives one, else ``http_<status>``."""
    reason: str
    status: int | None = None


ProviderResult = Accepted | RetryAfter | Transient | Permanent


@runtime_checkable
class Provider(Protocol):
    """Small on purpose: a second provider (Twilio, AWS) implements just this."""

    @property
    def name(self) -> str: ...

    async def send(self, message: OutboundMessage) -> ProviderResult: ...
