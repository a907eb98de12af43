"""Texts of automated replies (confirmations, HELP, status answers), per language.

Kept beside the outage templates' rules: GSM-7 only (Spanish without accents), the program
name first so the recipient knows who writes, one segment where possible. Each text also
yields *signatures*: fixed fragments an auto-responder quoting us back would contain,
which the loop guard uses to spot echoes.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Encoding

from .keywords import normalize
from .sms_text import fit, segment_info, transliterate

__all__ = ["ReplyText", "ReplyTexts"]


@dataclass(frozen=True, slots=True)
class _Lang:
    opted_out: str
    opted_out_all: str
    opted_in: str
    help: str
    ongoing: str
    ongoing_many: str
    eta: str
    eta_unknown: str
    info: str
    restored: str
    no_outage: str
    unknown_number: str
    not_understood: str


_LANGS: dict[str, _Lang] = {
    "en": _Lang(
        opted_out="{program}: You are unsubscribed and will get no more texts from this "
        "number. Reply START to resubscribe.",
        opted_out_all="{program}: You are unsubscribed from all {program} texts. Reply START "
        "to resubscribe.",
        opted_in="{program}: You are subscribed to outage texts again. Reply HELP for help, "
        "STOP to opt out.",
        help="{program}: outage texts for your service address. Help: {contact}. Reply STATUS "
        "for the latest, STOP to opt out. Msg&data rates may apply.",
        ongoing="{program}: Outage in your area.",
        ongoing_many="{program}: {n} outages in your area.",
        eta=" Est. restore {eta}.",
        eta_unknown=" Restore time not yet known.",
        info=" Info: {url}",
        restored="{program}: Service has been restored in your area.",
        no_outage="{program}: No known outage in your area. Reply HELP for help.",
        unknown_number="{program}: We have no account with this number. Reply HELP for help.",
        not_understood="{program}: Reply STATUS for outage status, HELP for help, STOP to opt out.",
    ),
    "es": _Lang(
        opted_out="{program}: Se ha dado de baja y no recibira mas mensajes de este numero. "
        "Responda START para volver.",
        opted_out_all="{program}: Se ha dado de baja de todos los mensajes de {program}. "
        "Responda START para volver.",
        opted_in="{program}: Recibira de nuevo avisos de cortes. Responda HELP para ayuda, "
        "STOP para cancelar.",
        help="{program}: avisos de cortes para su domicilio. Ayuda: {contact}. Responda STATUS "
        "para el estado, STOP para cancelar.",
        ongoing="{program}: Corte de servicio en su zona.",
        ongoing_many="{program}: {n} cortes de servicio en su zona.",
        eta=" Restablecimiento estimado: {eta}.",
        eta_unknown=" Hora de restablecimiento aun desconocida.",
        info=" Info: {url}",
        restored="{program}: El servicio se ha restablecido en su zona.",
        no_outage="{program}: No hay cortes conocidos en su zona. Responda HELP para ayuda.",
        unknown_number="{program}: No tenemos una cuenta con este numero. Responda HELP para "
        "ayuda.",
        not_understood="{program}: Responda STATUS para el estado, HELP para ayuda, STOP para "
        "cancelar.",
    ),
}


def _lang(language: str) -> _Lang:
    return _LANGS.get(language) or _LANGS.get(language[:2]) or _LANGS["en"]


@dataclass(frozen=True, slots=True)
class ReplyText:
    body: str
    encoding: Encoding
    segments: int


class ReplyTexts:
    def __init__(self, program: str, support_contact: str, max_segments: int = 2) -> None:
        self.program = transliterate(program)
        self.contact = transliterate(support_contact)
        self.max_segments = max_segments
        self._signatures = self._collect_signatures()
        self._prefix = normalize(self.program) + ":"
        self._fitted: dict[str, ReplyText] = {}

    MAX_REMEMBERED = 4096
    """Fitted texts kept: fitting walks a text per character and was the largest part of
    deciding a reply, and there are few distinct texts (menu, HELP, confirmations, one
    status answer per outage state); bounded, since status answers carry ETAs."""

    def _done(self, text: str) -> ReplyText:
        hit = self._fitted.get(text)
        if hit is None:
            body = fit(transliterate(text), "", "", max_segments=self.max_segments)
            cost = segment_info(body)
            hit = ReplyText(body, cost.encoding, cost.segments)
            if len(self._fitted) < self.MAX_REMEMBERED:
                self._fitted[text] = hit
        return hit

    def _fmt(self, template: str, **kw: object) -> str:
        return template.format(program=self.program, contact=self.contact, **kw)

    def opted_out(self, language: str, all_senders: bool) -> ReplyText:
        lang = _lang(language)
        return self._done(self._fmt(lang.opted_out_all if all_senders else lang.opted_out))

    def opted_in(self, language: str) -> ReplyText:
        return self._done(self._fmt(_lang(language).opted_in))

    def help(self, language: str) -> ReplyText:
        return self._done(self._fmt(_lang(language).help))

    def not_understood(self, language: str) -> ReplyText:
        return self._done(self._fmt(_lang(language).not_understood))

    def unknown_number(self, language: str = "en") -> ReplyText:
        return self._done(self._fmt(_lang(language).unknown_number))

    def no_outage(self, language: str) -> ReplyText:
        return self._done(self._fmt(_lang(language).no_outage))

    def restored(self, language: str) -> ReplyText:
        return self._done(self._fmt(_lang(language).restored))

    def ongoing(
        self, language: str, count: int, eta_local: str | None, status_url: str | None
    ) -> ReplyText:
        lang = _lang(language)
        head = self._fmt(lang.ongoing) if count == 1 else self._fmt(lang.ongoing_many, n=count)
        eta = lang.eta.format(eta=eta_local) if eta_local else lang.eta_unknown
        info = lang.info.format(url=status_url) if status_url else ""
        return self._done(head + eta + info)

    def _collect_signatures(self) -> tuple[str, ...]:
        """Normalised fragments of our texts that a person would not write on their own."""
        out: set[str] = set()
        for lang in _LANGS.values():
            for template in (
                lang.opted_out,
                lang.opted_in,
                lang.help,
                lang.no_outage,
                lang.unknown_number,
                lang.not_understood,
                lang.restored,
            ):
                # The part after "{program}: " is ours word for word.
                rest = template.split("}", 1)[-1].lstrip(": ")
                frag = normalize(rest.split("{", 1)[0])
                if len(frag) >= 16:
                    out.add(frag[:40])
        out.add("reply stop to opt out")
        out.add("responda stop para cancelar")
        return tuple(sorted(out))

    def is_echo(self, normalized_body: str) -> bool:
        """Our own text quoted back (an auto-responder), judged on the normalised body."""
        if normalized_body.startswith(self._prefix):
            return True
        return any(sig in normalized_body for sig in self._signatures)
