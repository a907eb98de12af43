"""One ``phonenumbers`` analysis per distinct number, shared by validation and facts.

A customer's number used to be analysed four times: parsed and validated by the schema
(``parse_e164``), then parsed, validated, typed and located again for its facts
(``streams.phones``), each ``phonenumbers`` call walking the region's patterns anew:
about 175 microseconds of CPU per new number here, against 60-90 for one analysis.
:func:`analyse_number` runs the same library steps once (parse, region, type; the zones
and the E.164 form only for a valid number, the zones without ``time_zones_for_number``'s
own re-typing) and keeps the answer in a bounded LRU, so a number seen again (an inbound
text, a CRM update, the replay re-reading a topic) costs a dictionary look-up.

The combination is phonenumbers' own code (9.0), inlined so nothing is computed twice:
``is_valid_number`` is ``is_valid_number_for_region(n, region_code_for_number(n))``;
``number_type`` is the same ``_number_type_helper`` over the same metadata (here read from
a table built once per region, :func:`_number_type`), so a valid number's type is the one
the validity check computed; and for a calling code shared by several regions (+1, +44,
+7) the region search already ran that helper for the region it picked, unless leading
digits decided it. A plain ``+digits`` string (every number on our
topics) is parsed by :func:`_parse_e164`, ``parse``'s own steps without its handling of
typed text: about 7 microseconds instead of 20-30. ``tests/unit/test_phones.py`` pins the
equivalence against the public functions over numbers from every calling code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    PhoneMetadata,
    PhoneNumberType,
)
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import ValidationResult as _Length
from phonenumbers.phonenumberutil import (
    _maybe_strip_national_prefix_carrier_code,
    _set_italian_leading_zeros_for_phone_number,
    _test_number_length,
    country_code_for_valid_region,
    is_number_type_geographical,
    national_significant_number,
    region_code_for_country_code,
)
from phonenumbers.re_util import re_compile

__all__ = ["PHONE_CACHE_SIZE", "NumberAnalysis", "analyse_number"]

#: Distinct numbers remembered. An entry is about 230 bytes (measured), so 7 MiB in all:
#: the worker's 1M-customer RSS (1,446 MiB, bench/results/latest.md) stays under its
#: 1.5 GiB target. Enough for a burst of texts and for a CRM batch between the customers
#: agent's two stages; a miss costs one analysis, half what every number cost before.
PHONE_CACHE_SIZE = 32_768


@dataclass(frozen=True, slots=True)
class NumberAnalysis:
    """What ``phonenumbers`` says about one string written in international form."""

    parse_error: str | None
    """The ``NumberParseException`` text when the string is not a number at all."""
    valid: bool
    """``phonenumbers.is_valid_number``."""
    number_type: int
    """``phonenumbers.number_type`` (a ``PhoneNumberType``); UNKNOWN when invalid."""
    region: str | None
    """``phonenumbers.region_code_for_number`` for a valid number, else None."""
    e164: str | None
    """The canonical E.164 form of a valid number, else None."""
    zones: tuple[str, ...] = ()
    """``timezone.time_zones_for_number`` of a valid number."""


#: ``+`` and digits only, as every number on our topics is written: for these
#: :func:`_parse_e164` skips the lenient text handling of ``phonenumbers.parse``.
_PLAIN_E164 = re_compile(r"\+[1-9][0-9]{1,16}")
_SHORT_LENGTHS = (_Length.TOO_SHORT, _Length.IS_POSSIBLE_LOCAL_ONLY, _Length.INVALID_LENGTH)


def _parse_e164(value: str) -> phonenumbers.PhoneNumber | None:
    """``phonenumbers.parse(value, None)`` for a plain ``+digits`` string, or None when
    it would raise (the caller then lets ``parse`` say why, in its words).

    ``parse`` is built for text a person typed: it looks for a number in the string,
    strips punctuation, extensions and RFC 3966 parameters and normalises every Unicode
    digit, char by char (about half of its 20 microseconds here), all of which leave a
    plain ``+digits`` string as it was. The steps that remain are its own, in its order
    (9.0): the country code (longest known prefix of at most three digits), the national
    prefix stripped when what remains still has a possible length, the length bounds,
    the Italian leading zeros.
    """
    digits = value[1:]
    for size in (1, 2, 3):
        cc = int(digits[:size])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    nsn = digits[size:]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        cc, region_code_for_country_code(cc)
    )
    if len(nsn) < 2 or metadata is None:
        return None
    _carrier, stripped, _ = _maybe_strip_national_prefix_carrier_code(nsn, metadata)
    if _test_number_length(stripped, metadata) not in _SHORT_LENGTHS:
        nsn = stripped
    if not 2 <= len(nsn) <= 17:
        return None
    number = phonenumbers.PhoneNumber(country_code=cc)
    _set_italian_leading_zeros_for_phone_number(nsn, number)
    number.national_number = int(nsn)
    return number


_Test = tuple[frozenset[int] | None, Callable[[str], object]]
"""``_is_number_matching_desc`` for one descriptor: (its possible lengths, None for any;
its pattern's ``fullmatch``)."""


def _test_of(desc: Any) -> _Test | None:
    """None for a descriptor that never matches (absent, or without a pattern)."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(desc.possible_length) if len(desc.possible_length) > 0 else None
    return lengths, re_compile(desc.national_number_pattern).fullmatch


_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

_Plan = tuple[_Test | None, tuple[tuple[_Test, int], ...], _Test | None, _Test | None, bool]
_PLANS: dict[int, tuple[Any, _Plan]] = {}


def _plan_of(metadata: Any) -> _Plan:
    found = _PLANS.get(id(metadata))
    if found is not None and found[0] is metadata:
        return found[1]
    specials = []
    for name, kind in _SPECIAL_TYPES:
        test = _test_of(getattr(metadata, name))
        if test is not None:
            specials.append((test, kind))
    plan: _Plan = (
        _test_of(metadata.general_desc),
        tuple(specials),
        _test_of(metadata.fixed_line),
        _test_of(metadata.mobile),
        bool(metadata.same_mobile_and_fixed_line_pattern),
    )
    _PLANS[id(metadata)] = (metadata, plan)  # holding the metadata keeps its id its own
    return plan


def _number_type(nsn: str, metadata: Any) -> int:
    """``phonenumbers``' ``_number_type_helper`` from a table built once per region: the
    same descriptors in the same order, each its length check and then a full match of
    its pattern (``_match`` without prefix matching is exactly ``fullmatch``): 5.4-8.4 ->
    1.7-2.0 microseconds for a US number here, measured side by side."""
    general, specials, fixed, mobile, same = _plan_of(metadata)
    n = len(nsn)
    if not _matches(general, nsn, n):
        return PhoneNumberType.UNKNOWN
    for test, kind in specials:
        if _matches(test, nsn, n):
            return kind
    if _matches(fixed, nsn, n):
        if same or _matches(mobile, nsn, n):
            return PhoneNumberType.FIXED_LINE_OR_MOBILE
        return PhoneNumberType.FIXED_LINE
    if not same and _matches(mobile, nsn, n):
        return PhoneNumberType.MOBILE
    return PhoneNumberType.UNKNOWN


def _matches(test: _Test | None, nsn: str, n: int) -> bool:
    """``_is_number_matching_desc(nsn, desc)`` for the descriptor ``test`` was built from."""
    return test is not None and (test[0] is None or n in test[0]) and bool(test[1](nsn))


@lru_cache(maxsize=PHONE_CACHE_SIZE)
def analyse_number(value: str) -> NumberAnalysis:
    """Parse ``value`` (no default region: it must carry ``+`` and a country code)."""
    parsed = _parse_e164(value) if _PLAIN_E164.fullmatch(value) else None
    if parsed is None:
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException as exc:
            return NumberAnalysis(str(exc), False, PhoneNumberType.UNKNOWN, None, None)
    invalid = NumberAnalysis(None, False, PhoneNumberType.UNKNOWN, None, None)
    cc = parsed.country_code
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc) if cc is not None else None
    if cc is None or regions is None:
        return invalid
    nsn = national_significant_number(parsed)
    # region_code_for_number, keeping the type its search computes for a shared code (+1).
    found: int | None = None
    region: str | None
    if len(regions) == 1:
        region = regions[0]
    else:
        region = None
        for code in regions:
            md = PhoneMetadata.metadata_for_region(code.upper(), None)
            if md is None:
                continue
            if md.leading_digits is not None:
                if re_compile(md.leading_digits).match(nsn):
                    region = code
                    break
            else:
                kind = _number_type(nsn, md)
                if kind != PhoneNumberType.UNKNOWN:
                    region, found = code, kind
                    break
        if region is None:
            return invalid
    # is_valid_number_for_region, keeping the type it computes (the same helper over the
    # same metadata as the search above, when the search computed one).
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
    if metadata is None or (
        region != REGION_CODE_FOR_NON_GEO_ENTITY and cc != country_code_for_valid_region(region)
    ):
        return invalid
    kind = found if found is not None else _number_type(nsn, metadata)
    if kind == PhoneNumberType.UNKNOWN:
        return invalid
    return NumberAnalysis(
        None,
        True,
        kind,
        region,
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        # timezone.time_zones_for_number, minus its third computation of the type.
        tuple(
            pn_timezone.time_zones_for_geographical_number(parsed)
            if is_number_type_geographical(kind, cc)
            else pn_timezone._country_level_time_zones_for_number(parsed)
        ),
    )
