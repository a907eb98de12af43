"""The rules the settings configure, built in one place.

The worker's agents and ``outage-sms audit replay`` must decide with the same rules, or a
replay reports divergences that are only two copies drifting apart.
"""

from __future__ import annotations

from datetime import timedelta

from streams.dispatch import DispatchRules
from streams.fanout import FanoutPlanner, FanoutRules
from streams.keywords import KeywordConfig
from streams.loops import LoopRules
from streams.replies import ReplyRules
from streams.senders import parse_pool
from streams.templates import Templates

from .settings import Settings

__all__ = ["dispatch_rules", "fanout_planner", "reply_rules"]


def fanout_planner(s: Settings) -> FanoutPlanner:
    quiet_start, quiet_end = s.quiet_window()
    return FanoutPlanner(
        parse_pool(s.senders),
        Templates(s.program_name),
        FanoutRules(
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            defer_service_alerts=s.quiet_hours_alerts == "defer",
            eta_change=timedelta(minutes=s.eta_change_minutes),
            command_ttl=timedelta(hours=s.command_ttl_hours),
            default_timezone=s.default_timezone,
        ),
    )


def dispatch_rules(s: Settings) -> DispatchRules:
    """Send-time rules; the ETA threshold is the fan-out's, so that a queued text is stale
    exactly when the fan-out has sent a newer one in its place."""
    return DispatchRules(eta_change=timedelta(minutes=s.eta_change_minutes))


def reply_rules(s: Settings) -> ReplyRules:
    return ReplyRules(
        program_wide_optout=s.optout_scope == "program",
        restored_for=timedelta(hours=s.status_restored_hours),
        reply_ttl=timedelta(minutes=s.reply_ttl_minutes),
        menu_every=timedelta(hours=s.menu_every_hours),
        default_timezone=s.default_timezone,
        keywords=KeywordConfig.from_lists(
            opt_out=s.keywords_opt_out,
            opt_out_all=s.keywords_opt_out_all,
            opt_in=s.keywords_opt_in,
            help=s.keywords_help,
            status=s.keywords_status,
            revocation_phrases=s.revocation_phrases,
        ),
        loop=LoopRules(
            max_inbound=s.loop_max_inbound,
            window=timedelta(seconds=s.loop_window_seconds),
            max_repeats=s.loop_max_repeats,
            repeat_window=timedelta(seconds=s.loop_repeat_window_seconds),
            cooldown=timedelta(minutes=s.loop_cooldown_minutes),
            max_replies=s.reply_max_per_hour,
            reply_window=timedelta(hours=1),
        ),
    )
