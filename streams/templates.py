"""Outage texts per kind and language: one segment where possible, segment-aware always.

The template carries the obligations (who we are, the ETA, the status link, "Reply STOP to
opt out" on the first message); only the outage summary is shortened to fit. Texts are
rendered once per (kind, language, local ETA, first message) and reused for every
recipient that shares them, never once per recipient.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from schemas import Encoding, MessageKind

from .sms_text import fit, segment_info, transliterate

__all__ = [
    "LANGUAGES",
    "Rendered",
    "Templates",
    "format_eta",
    "opt_out_footer",
    "with_opt_out_footer",
]


@dataclass(frozen=True, slots=True)
class _Lang:
    alert: str
    update: str
    restored: str
    eta: str
    eta_unknown: str
    info: str
    stop: str
    weekdays: tuple[str, ...]
    clock24: bool


# Spanish is written without accents on purpose: one accented letter outside GSM-7
# (a, i, o, u acute) switches the whole text to UCS-2 and halves what fits in a segment.
LANGUAGES: dict[str, _Lang] = {
    "en": _Lang(
        alert="{program}: Outage in your area. ",
        update="{program} update: ",
        restored="{program}: Service has been restored in your area.",
        eta=" Est. restore {eta}.",
        eta_unknown=" Restore time not yet known.",
        info=" Info: {url}",
        stop=" Reply STOP to opt out.",
        weekdays=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        clock24=False,
    ),
    "es": _Lang(
        alert="{program}: Corte de servicio en su zona. ",
        update="{program} actualizacion: ",
        restored="{program}: El servicio se ha restablecido en su zona.",
        eta=" Restablecimiento estimado: {eta}.",
        eta_unknown=" Hora de restablecimiento aun desconocida.",
        info=" Info: {url}",
        stop=" Responda STOP para cancelar.",
        weekdays=("lun", "mar", "mie", "jue", "vie", "sab", "dom"),
        clock24=True,
    ),
}


def _lang(language: str) -> _Lang:
    return LANGUAGES.get(language) or LANGUAGES.get(language[:2]) or LANGUAGES["en"]


def format_eta(eta: datetime | None, zone: ZoneInfo, now: datetime, language: str) -> str | None:
    """The ETA in the recipient's local time; the weekday too unless it is today there."""
    if eta is None:
        return None
    lang = _lang(language)
    local = eta.astimezone(zone)
    if lang.clock24:
        clock = f"{local.hour:02d}:{local.minute:02d}"
    else:
        hour = local.hour % 12 or 12
        clock = f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    if local.date() != now.astimezone(zone).date():
        return f"{lang.weekdays[local.weekday()]} {clock}"
    return clock


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str
    encoding: Encoding
    segments: int


class Templates:
    def __init__(self, program: str, max_segments: int = 1) -> None:
        self.program = transliterate(program)
        self.max_segments = max_segments

    def render(
        self,
        kind: MessageKind,
        language: str,
        summary: str,
        eta_local: str | None,
        status_url: str | None,
        first_message: bool,
    ) -> Rendered:
        lang = _lang(language)
        eta = lang.eta.format(eta=eta_local) if eta_local else lang.eta_unknown
        info = lang.info.format(url=status_url) if status_url else ""
        stop = lang.stop if first_message else ""
        if kind is MessageKind.RESTORED:
            prefix, variable, suffix = lang.restored.format(program=self.program), "", ""
        elif kind is MessageKind.UPDATE:
            prefix, variable = lang.update.format(program=self.program), summary
            suffix = eta
        elif kind is MessageKind.ALERT:
            prefix, variable = lang.alert.format(program=self.program), summary
            suffix = eta
        else:
            raise ValueError(f"no outage template for kind {kind.value!r}")
        head, tail = transliterate(prefix), transliterate(suffix + info + stop)
        body = fit(head, transliterate(variable).strip(), tail, max_segments=self.max_segments)
        if not body.endswith(tail):
            # The obligations (status link, "Reply STOP") do not fit in the segment budget
            # (a long status URL): spend more segments rather than cut them off.
            body = fit(head, transliterate(variable).strip(), tail, max_segments=10)
        cost = segment_info(body)
        return Rendered(body, cost.encoding, cost.segments)


@functools.cache
def opt_out_footer(language: str) -> str:
    """The first-message "Reply STOP to opt out" in ``language``, as templates append it.

    Cached: the dispatcher asks for every command it reads and settles."""
    return transliterate(_lang(language).stop)


def with_opt_out_footer(body: str, language: str) -> Rendered:
    """``body`` with the opt-out footer appended (if it lacks it), re-counted.

    For the dispatcher, when the text that carried the footer was never sent: compliance
    over cost, so the footer may take the text into one more segment.
    """
    footer = opt_out_footer(language)
    text = body if body.endswith(footer) else body.rstrip() + footer
    cost = segment_info(text)
    return Rendered(text, cost.encoding, cost.segments)
