"""Start-up checks of the configuration, before any broker or provider is contacted.

A misconfigured worker or dispatcher should stop at once with every fix named, not
after it has connected, created topics and joined a group, and not by failing its
first command an hour later. Broker reachability and partition counts are checked next,
by ``outage_sms.admin.ensure_topics``, which both processes run first.
"""

from __future__ import annotations

import logging
from typing import Literal

from streams.errors import ConfigurationError
from streams.senders import check_pool, parse_pool
from topology.settings import Settings

__all__ = ["check_settings"]

log = logging.getLogger(__name__)

Role = Literal["worker", "dispatcher"]


def check_settings(settings: Settings, role: Role) -> list[str]:
    """Raise ``ConfigurationError`` listing every problem found; return the warnings.

    Both roles: ``OUTAGE_SMS_SENDERS`` (syntax, an active sender, ids the topic contract
    can carry). Dispatcher: a broker address and the provider's credentials.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        findings = check_pool(parse_pool(settings.senders))
    except ConfigurationError as exc:
        errors.append(str(exc))
    else:
        errors.extend(findings.errors)
        warnings.extend(findings.warnings)
    if role == "dispatcher":
        from .dispatch import genesys_config  # imports httpx and aiokafka: dispatcher only

        if not settings.bootstrap_servers:
            errors.append(
                "the dispatcher needs a broker: set KAFKA_BOOTSTRAP_SERVERS to the worker's "
                "(`outage-sms worker` prints it when it starts the embedded broker)"
            )
        try:
            genesys_config(settings)
        except ConfigurationError as exc:
            errors.append(str(exc))
    if len(errors) == 1:
        raise ConfigurationError(errors[0])
    if errors:
        raise ConfigurationError(
            f"the {role} cannot start:\n" + "\n".join(f"  - {e}" for e in errors)
        )
    return warnings
