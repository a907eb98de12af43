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
    can carry). Worker with its web server on: its callers' credentials (the same rule
    ``topology.web`` enforces when the app is built, only earlier). Dispatcher: a broker
    address and the provider's credentials.
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
    if role == "worker" and settings.web_enabled:
        errors.extend(_web_problems())
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


def _web_problems() -> list[str]:
    from topology.web_settings import WebSettings

    ws = WebSettings()
    if ws.web_demo:
        return []
    if bool(ws.web_basic_user) != bool(ws.web_basic_password):
        missing = (
            "OUTAGE_SMS_WEB_BASIC_PASSWORD" if ws.web_basic_user else "OUTAGE_SMS_WEB_BASIC_USER"
        )
        if not ws.web_secret:
            return [
                f"HTTP Basic credentials are half set: set {missing} too (or "
                "OUTAGE_SMS_WEB_SECRET instead)"
            ]
    if not ws.credentials().configured:
        return [
            "the web server (OUTAGE_SMS_WEB_ENABLED) needs credentials: set "
            "OUTAGE_SMS_WEB_SECRET, or OUTAGE_SMS_WEB_BASIC_USER and "
            "OUTAGE_SMS_WEB_BASIC_PASSWORD (or OUTAGE_SMS_WEB_DEMO=true for a demo without "
            "authentication)"
        ]
    return []
