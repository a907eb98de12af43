"""What an inbound text asks for: opt out, opt in, help, status, or nothing we act on.

Providers act only on a message that is a single keyword ("STOP", " stop! "); the FCC's
2024 order says consent may be revoked "in any reasonable manner", so clear revocation in
plain words ("please stop texting me", "unsubscribe me") counts too. The phrase rules are
deliberately narrow: an ordinary sentence that merely contains "stop", "end" or "cancel"
("when will the outage end?", "don't stop the updates") is not an opt-out. The lists are
configuration (``KeywordConfig``); the defaults follow ../shared/FACTS.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DEFAULT_HELP",
    "DEFAULT_OPT_IN",
    "DEFAULT_OPT_OUT",
    "DEFAULT_OPT_OUT_ALL",
    "DEFAULT_STATUS",
    "Classified",
    "Intent",
    "KeywordConfig",
    "classify",
    "normalize",
]

#: Opt-out words acting on the sender number they were sent to (Genesys keeps a DNC list
#: per SMS number). Genesys: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT; Twilio adds
#: REVOKE, OPTOUT; AWS adds OPT-OUT, REMOVE, ARRET, TD.
DEFAULT_OPT_OUT: tuple[str, ...] = (
    "stop",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "revoke",
    "optout",
    "opt-out",
    "opt out",
    "remove",
    "arret",
    "td",
    # Spanish and French: our Spanish texts say "STOP para cancelar".
    "baja",
    "cancelar",
    "parar",
    "detener",
    "alto",
    "arreter",
    "arrete",
    "arretez",
)
#: Opt-out words acting on every sender of the program.
DEFAULT_OPT_OUT_ALL: tuple[str, ...] = ("stopall", "stop all", "unsubscribe all", "cancel all")
#: Words that may surround an opt-out keyword without changing what it means
#: ("STOP STOP", "stop it", "pls stop", "unsubscribe please", "stop now thanks").
FILLERS: frozenset[str] = frozenset(
    "please pls plz now it this thanks thank you thx ty just ok okay asap immediately "
    "already again me all por favor ya gracias".split()
)
DEFAULT_OPT_IN: tuple[str, ...] = ("start", "unstop", "yes", "subscribe")
DEFAULT_HELP: tuple[str, ...] = ("help", "info")
DEFAULT_STATUS: tuple[str, ...] = ("status", "stat", "out", "outage", "eta", "update")


MEMO_SIZE = 4096
"""Bodies :meth:`KeywordConfig.understand` remembers (at most 4096 x a text's 1,600 chars)."""


class Intent(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    STATUS = "status"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Classified:
    intent: Intent
    all_senders: bool = False
    """An opt-out (or opt-in) for every sender of the program, not only the one written to."""
    matched: str | None = None
    """The keyword or phrase rule that decided it, for the audit."""
    conditional: bool = False
    """YES: an opt-in only when the number is opted out (otherwise an ordinary answer)."""


@dataclass(frozen=True, slots=True)
class KeywordConfig:
    opt_out: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_OPT_OUT))
    opt_out_all: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_OPT_OUT_ALL))
    opt_in: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_OPT_IN))
    help: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_HELP))
    status: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_STATUS))
    revocation_phrases: bool = True
    """Treat clear plain-words revocation ("stop texting me") as an opt-out."""
    any_opt_out: frozenset[str] = field(init=False, repr=False, compare=False)
    """Both opt-out lists, joined once rather than for every text."""
    _memo: dict[str, tuple[str, Classified]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "any_opt_out", self.opt_out | self.opt_out_all)
        object.__setattr__(self, "_memo", {})

    def understand(self, body: str) -> tuple[str, Classified]:
        """``(normalize(body), classify(body, self))``, remembered for recent bodies.

        Why: in an outage thousands of customers send the same few texts ("STATUS",
        "when will it be fixed?"), and the phrase rules were the costliest part of a
        reply's decision. Both functions are pure, so a remembered answer is the answer.
        Bounded: the memory is emptied when it holds ``MEMO_SIZE`` bodies."""
        found = self._memo.get(body)
        if found is None:
            norm = normalize(body)
            found = (norm, classify(body, self, norm))
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[body] = found
        return found

    @classmethod
    def from_lists(
        cls,
        *,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT,
        opt_out_all: Iterable[str] = DEFAULT_OPT_OUT_ALL,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
        help: Iterable[str] = DEFAULT_HELP,  # noqa: A002  (the keyword's own name)
        status: Iterable[str] = DEFAULT_STATUS,
        revocation_phrases: bool = True,
    ) -> KeywordConfig:
        def norm(words: Iterable[str]) -> frozenset[str]:
            return frozenset(n for w in words if (n := normalize(w)))

        return cls(
            norm(opt_out),
            norm(opt_out_all),
            norm(opt_in),
            norm(help),
            norm(status),
            revocation_phrases,
        )


_SPACE = re.compile(r"\s+")
# Surrounding punctuation, quotes and emoji-ish symbols are ignored; inner hyphens and
# apostrophes are kept ("opt-out", "don't").
_EDGE = re.compile(r"^\W+|\W+$")
_INNER_PUNCT = re.compile(r"[^\w\s'\-]")


def normalize(body: str) -> str:
    """Case-folded, accents removed ("ARRÊT" -> "arret"), whitespace collapsed, surrounding
    punctuation dropped; curly apostrophes become straight ones."""
    if body.isascii():  # most texts: NFKD changes nothing and nothing combines
        text = body.casefold()
    else:
        text = unicodedata.normalize("NFKD", body.replace("\u2019", "'").replace("\u2018", "'"))
        text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _SPACE.sub(" ", text).strip()
    return _EDGE.sub("", text)


def _words(norm: str) -> str:
    """Sentence form for the phrase rules: inner punctuation as spaces."""
    return _SPACE.sub(" ", _INNER_PUNCT.sub(" ", norm)).strip()


# Clear revocation in plain words. Each pattern needs a verb aimed at *us* ("texting me",
# "unsubscribe me", "take me off"), so "stop the outage" or "cancel my order" do not match.
_ME = r"(?:me|us|this number|my number|my phone)"
_MSG = (
    r"(?:text(?:ing|s)?|messag(?:e|es|ing)|sms|contact(?:ing)?|alert(?:s|ing)?"
    r"|sending (?:me|us)(?: \w+)?)"
)
_REVOKE = [
    re.compile(p)
    for p in (
        rf"\b(?:stop|quit|cease) {_MSG}(?: {_ME})?\b",
        r"\bstop (?:all )?(?:\w+ )?(?:texts|messages|alerts|sms|notifications)\b",
        rf"\b(?:don'?t|do not|never) (?:text|message|contact|sms) {_ME}\b",
        r"\b(?:don'?t|do not|never) send (?:me|us) (?:any )?(?:more )?(?:texts|messages|sms)\b",
        rf"\b(?:unsubscribe|opt) {_ME}(?: out)?\b",
        rf"\bunsubscribe {_ME}\b",
        rf"\b(?:remove|take) {_ME} (?:off|from)\b",
        r"^(?:please )?remove me$",
        r"\bno mas (?:mensajes|textos)\b",
        r"\bdar(?:me)? de baja\b",
        r"\bi (?:want|would like|wish) to (?:unsubscribe|opt out|stop (?:receiving|getting))\b",
        r"\bno more (?:texts|messages|alerts|sms)\b",
        r"\bi (?:revoke|withdraw) (?:my )?consent\b",
        r"\bleave me alone\b",
    )
]
# A negation in the few words before a match turns it around ("please don't stop texting
# me", "do NOT unsubscribe me"), and so does asking about it ("why did you stop texting me?").
_NEGATORS = frozenset(
    "don't dont not never can't cant cannot won't wont shouldn't shouldnt didn't didnt "
    "why did".split()
)
_NEGATION_WINDOW = 4
_CLAUSES = re.compile(r"[,.;!?]+")
# "STOP - wrong number", "Stop. I moved": the strongest keywords lead, then punctuation.
_LEADING_KEYWORD = re.compile(r"^(stop|stopall|unsubscribe)\s*[-.,;:!]")
_ALL_SCOPE = re.compile(
    r"\b(?:stop|unsubscribe|cancel|quit|end|remove me from) all\b|\ball (?:your |these |the )?"
    r"(?:texts|messages|alerts|sms|numbers)\b"
)


def _negated(single: str, start: int) -> bool:
    before = single[:start].split()[-_NEGATION_WINDOW:]
    return any(w in _NEGATORS for w in before) or " ".join(before[-2:]) == "do not"


def _keyword_sentence(words: list[str], keywords: frozenset[str]) -> str | None:
    """The keyword when every word is that keyword or a filler ("STOP STOP", "pls stop")."""
    found = [w for w in words if w in keywords]
    if found and all(w in keywords or w in FILLERS for w in words):
        return found[0]
    return None


# A question about the outage ("when will it be fixed?", "is the power back?").
_STATUS_Q = [
    re.compile(p)
    for p in (
        r"\bwhen (?:will|is|does|do|are|can|should|would)\b.*\b(?:fix|fixed|back|restor\w*|"
        r"on|up|over|done|resolv\w*|repair\w*|work\w*|end|finish\w*|power|service|internet|"
        r"outage)\b",
        r"\b(?:is|are) (?:the )?(?:power|service|internet|water|gas|electricity|it|everything)"
        r" (?:back|on|up|restored|fixed|working)\b",
        r"\b(?:any|what'?s|what is) (?:the )?(?:update|news|eta|status|estimate)\b",
        r"\bhow long\b",
        r"\b(?:estimated|expected) (?:time|restor\w*)\b",
        r"\bstill (?:out|down|no power|no service)\b",
        r"\b(?:my |the )?(?:power|service|internet) (?:is )?(?:out|down|off)\b",
    )
]


def classify(
    body: str, config: KeywordConfig | None = None, normalized: str | None = None
) -> Classified:
    """The intent of one inbound text. Keywords win over phrases; opt-out wins over all.

    ``normalized``: ``normalize(body)`` when the caller has it already."""
    cfg = config or KeywordConfig()
    norm = normalize(body) if normalized is None else normalized
    if not norm:
        return Classified(Intent.OTHER)
    single = _words(norm)
    if norm in cfg.opt_out_all or single in cfg.opt_out_all:
        return Classified(Intent.OPT_OUT, all_senders=True, matched=single)
    if norm in cfg.opt_out or single in cfg.opt_out:
        return Classified(Intent.OPT_OUT, matched=single)
    if norm in cfg.opt_in or single in cfg.opt_in:
        return Classified(Intent.OPT_IN, matched=single, conditional=single == "yes")
    if norm in cfg.help or single in cfg.help:
        return Classified(Intent.HELP, matched=single)
    if norm in cfg.status or single in cfg.status:
        return Classified(Intent.STATUS, matched=single)
    words = single.split()
    everything = bool(_ALL_SCOPE.search(single))
    keyword = _keyword_sentence(words, cfg.any_opt_out)
    if keyword is not None:
        return Classified(
            Intent.OPT_OUT, all_senders=everything or keyword in cfg.opt_out_all, matched=keyword
        )
    if cfg.revocation_phrases:
        lead = _LEADING_KEYWORD.match(norm)
        if lead:
            return Classified(Intent.OPT_OUT, all_senders=everything, matched=lead.group(1))
        # Clause by clause, so a negation in one ("I can't stop these, ...") does not
        # reach into the next ("... unsubscribe me").
        for clause in filter(None, (_words(c) for c in _CLAUSES.split(norm))):
            for rule in _REVOKE:
                for m in rule.finditer(clause):
                    if not _negated(clause, m.start()):
                        return Classified(
                            Intent.OPT_OUT, all_senders=everything, matched=m.group(0)
                        )
    for rule in _STATUS_Q:
        question = rule.search(single)
        if question:
            return Classified(Intent.STATUS, matched=question.group(0))
    return Classified(Intent.OTHER)
