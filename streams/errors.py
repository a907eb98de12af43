"""The one exception hierarchy, and what each branch means for a record in flight.

- ``PermanentError``: this input can never succeed (bad record, forbidden content, a
  configuration that names something that does not exist). Records go to the dead-letter
  topic with the reason; configuration errors stop the process with a message naming the fix.
- ``RetriableError``: the world is briefly unavailable (broker, network, provider 429/5xx).
  Retry with backoff; never dead-letter, never drop. When retries run out the worker stops
  without committing, so the record is processed again after the restart.

Errors raised by libraries (aiokafka, httpx, OS) are classified at the edge, in
``topology``, by ``is_retriable``-style checks; ``streams`` raises only these.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "OutageSmsError", "PermanentError", "RetriableError"]


class OutageSmsError(Exception):
    """Base of every error this project raises on purpose."""


class PermanentError(OutageSmsError):
    """Retrying cannot help: dead-letter the record (or stop, for configuration)."""


class RetriableError(OutageSmsError):
    """Transient: retry with backoff, and never drop the record."""


class ConfigurationError(PermanentError):
    """The settings or the cluster do not fit together; the message names the fix."""
