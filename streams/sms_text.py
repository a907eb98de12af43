"""SMS text: which encoding a message needs, how many segments it costs, and how to fit it.

Carriers and providers bill and throttle by segment, not by message, so an outage alert that
spills into a second segment halves throughput exactly when throughput matters. Two traps
make naive counting wrong:

* one character outside GSM-7 (a curly quote pasted from a word processor) switches the
  whole message to UCS-2 and cuts a segment from 160 characters to 70, which is why
  :func:`transliterate` exists;
* a GSM-7 extension character (two septets) and a UTF-16 surrogate pair (most emoji) never
  split across segments, so the count comes from packing characters into segments, not
  from ``ceil(units / 153)``.

Python strings hold code points, so an extension character or an emoji is one item here:
packing and cutting item by item can never split either. National language shift tables
(Turkish, Spanish, Portuguese) are not modelled: providers rarely use them for
application-to-person traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from schemas import Encoding

__all__ = [
    "GSM7_BASIC",
    "GSM7_CONCAT",
    "GSM7_EXTENSION",
    "GSM7_SINGLE",
    "TRANSLITERATIONS",
    "UCS2_CONCAT",
    "UCS2_SINGLE",
    "SegmentInfo",
    "fit",
    "is_gsm7",
    "segment_info",
    "septets",
    "split_segments",
    "transliterate",
    "ucs2_units",
]

#: GSM 03.38 default alphabet, without ESC (0x1B), which only introduces extension characters.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

#: Reached through ESC, so each costs two septets.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

_GSM7 = GSM7_BASIC | GSM7_EXTENSION

#: Capacity of a lone segment, and of each part of a concatenated message (the rest of the
#: 140 bytes carries the user data header that tells the phone how to reassemble).
GSM7_SINGLE = 160
GSM7_CONCAT = 153
UCS2_SINGLE = 70
UCS2_CONCAT = 67

_SMART_TO_PLAIN: dict[str, str] = {
    # Quotes and primes that word processors and CMSs substitute for the ASCII ones.
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark / typographic apostrophe
    "\u201a": "'",  # single low-9 quotation mark
    "\u201b": "'",  # single high-reversed-9 quotation mark
    "\u2032": "'",  # prime
    "\u2039": "'",  # single left-pointing angle quotation mark
    "\u203a": "'",  # single right-pointing angle quotation mark
    "\u00b4": "'",  # acute accent used as an apostrophe
    "`": "'",  # grave accent is ASCII but not GSM-7
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u201e": '"',  # double low-9 quotation mark
    "\u201f": '"',  # double high-reversed-9 quotation mark
    "\u2033": '"',  # double prime
    "\u00ab": '"',  # left-pointing double angle quotation mark
    "\u00bb": '"',  # right-pointing double angle quotation mark
    # Dashes and hyphens.
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2015": "-",  # horizontal bar
    "\u2212": "-",  # minus sign
    "\u2022": "-",  # bullet
    "\u2026": "...",  # horizontal ellipsis
    # Spaces that look like a space; a tab has no GSM-7 code either.
    "\t": " ",
    "\u00a0": " ",  # no-break space
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\u2004": " ",  # three-per-em space
    "\u2005": " ",  # four-per-em space
    "\u2006": " ",  # six-per-em space
    "\u2007": " ",  # figure space
    "\u2008": " ",  # punctuation space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u202f": " ",  # narrow no-break space
    # Invisible characters that would cost a whole encoding switch for nothing. The zero
    # width joiner is deliberately absent: it holds emoji sequences together.
    "\u00ad": "",  # soft hyphen
    "\u200b": "",  # zero width space
    "\ufeff": "",  # byte order mark / zero width no-break space
}

#: Non-GSM-7 character -> GSM-7 replacement. Accented letters outside GSM-7 (á, ç, ł) are
#: left alone: stripping accents changes names and words, and UCS-2 renders them faithfully.
TRANSLITERATIONS: Mapping[str, str] = MappingProxyType(_SMART_TO_PLAIN)

_TRANSLATE_TABLE = str.maketrans(_SMART_TO_PLAIN)

#: Stripped from the end of a shortened variable so it reads "on site..." not "on site, ...".
_DANGLING = ",;:-"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What a text costs to send.

    ``units`` are septets for GSM-7 and UTF-16 code units for UCS-2; ``per_segment`` is the
    capacity of each segment (160/70 for a lone segment, 153/67 once concatenated).
    """

    encoding: Encoding
    units: int
    segments: int
    per_segment: int


def transliterate(text: str) -> str:
    """Replace look-alike typography with GSM-7 so a message does not fall back to UCS-2.

    GSM-7 characters and anything without an obvious equivalent (emoji, CJK) are kept, so
    the result is GSM-7 whenever the only obstacles were smart punctuation. Idempotent.
    """
    return text.translate(_TRANSLATE_TABLE)


def is_gsm7(text: str) -> bool:
    """True when every character has a GSM-7 code, basic or extension."""
    return all(c in _GSM7 for c in text)


def septets(text: str) -> int:
    """GSM-7 length; raises :class:`ValueError` rather than guess for non-GSM-7 text."""
    total = 0
    for c in text:
        if c in GSM7_BASIC:
            total += 1
        elif c in GSM7_EXTENSION:
            total += 2
        else:
            raise ValueError(f"{c!r} (U+{ord(c):04X}) has no GSM-7 code")
    return total


def ucs2_units(text: str) -> int:
    """UTF-16 code units, as a UCS-2 SMS counts them: code points outside the BMP cost 2."""
    return sum(_ucs2_cost(c) for c in text)


def segment_info(text: str) -> SegmentInfo:
    """Encoding and segment count; an empty text is still one (empty) segment to send."""
    info, _ = _plan(text)
    return info


def split_segments(text: str) -> list[str]:
    """The text of each segment in order; ``"".join`` of the result is ``text``.

    An empty text gives ``[""]``, matching :func:`segment_info`'s one segment.
    """
    _, cuts = _plan(text)
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def fit(
    template_prefix: str,
    variable: str,
    template_suffix: str,
    *,
    max_segments: int = 1,
    max_chars: int = 765,
    ellipsis: str = "...",
) -> str:
    """``prefix + variable + suffix``, shortening only ``variable`` until the whole fits.

    The template parts (greeting, status link, "Reply STOP to opt out") carry obligations;
    the variable (an outage summary) is the part that can lose detail. Limits apply to the
    full final text: cutting the only non-GSM-7 character out of the variable can switch
    the message back to GSM-7 and so allow a longer cut. ``max_chars`` counts UTF-16 code
    units, never more permissive than counting characters, whichever way a provider counts.

    The variable is cut at a word boundary unless that loses more than half of what would
    fit, then ``ellipsis`` is appended. If only ``prefix + ellipsis + suffix`` fits, that is
    returned; then ``prefix + suffix``. If even that is too long, the template itself is too
    long for the limits (a configuration error worth a test): the longest leading part of
    ``prefix + suffix`` that fits is returned, so the result always satisfies the limits.
    Run :func:`transliterate` on the parts first so smart punctuation does not force UCS-2.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    if max_chars < 0:
        raise ValueError(f"max_chars must not be negative, got {max_chars}")

    def fits(text: str) -> bool:
        return ucs2_units(text) <= max_chars and segment_info(text).segments <= max_segments

    full = template_prefix + variable + template_suffix
    if fits(full):
        return full

    if variable:
        # Keeping more of the variable never makes the text cheaper, so the longest kept
        # length that fits can be found by bisection.
        def fits_cut(k: int) -> bool:
            return fits(template_prefix + variable[:k] + ellipsis + template_suffix)

        k = _longest(len(variable) - 1, fits_cut)
        if k is not None:
            return template_prefix + _cut_at_word(variable, k) + ellipsis + template_suffix

    bare = template_prefix + template_suffix
    if fits(bare):
        return bare
    k = _longest(len(bare), lambda n: fits(bare[:n]))
    # The empty string always fits (one segment, no characters), so ``k`` is never None.
    return bare[: k or 0]


def _ucs2_cost(c: str) -> int:
    return 2 if ord(c) > 0xFFFF else 1


def _gsm7_cost(c: str) -> int:
    return 2 if c in GSM7_EXTENSION else 1


def _plan(text: str) -> tuple[SegmentInfo, list[int]]:
    """Segment info plus the indexes where each segment after the first begins.

    Greedy packing is optimal here: filling each segment as far as it goes can never leave
    more segments than any other split of the same sequence.
    """
    if is_gsm7(text):
        encoding, cost, single, concat = Encoding.GSM7, _gsm7_cost, GSM7_SINGLE, GSM7_CONCAT
    else:
        encoding, cost, single, concat = Encoding.UCS2, _ucs2_cost, UCS2_SINGLE, UCS2_CONCAT
    costs = [cost(c) for c in text]
    units = sum(costs)
    if units <= single:
        return SegmentInfo(encoding, units, 1, single), []
    cuts: list[int] = []
    used = 0
    for i, n in enumerate(costs):
        if used + n > concat:
            cuts.append(i)
            used = 0
        used += n
    return SegmentInfo(encoding, units, len(cuts) + 1, concat), cuts


def _longest(n: int, fits: Callable[[int], bool]) -> int | None:
    """Largest ``k`` in ``[0, n]`` with ``fits(k)``, for a ``fits`` that only turns false."""
    if n < 0 or not fits(0):
        return None
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut_at_word(text: str, k: int) -> str:
    """``text[:k]``, pulled back to the last space unless that throws away over half of it.

    The result is always a prefix of ``text[:k]``, so it fits wherever ``text[:k]`` did.
    """
    if k < len(text) and not text[k].isspace():
        space = next((i for i in range(k - 1, -1, -1) if text[i].isspace()), -1)
        if space >= k // 2:
            k = space
    kept = text[:k].rstrip()
    return kept.rstrip(_DANGLING).rstrip()
