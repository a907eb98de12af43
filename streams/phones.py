"""Facts about a phone number that compliance needs, computed once per number.

Analysing a number with ``phonenumbers`` costs about 150 microseconds: far too slow for
a million-recipient fan-out, cheap at CRM update rate. So these facts are computed when a
customer record arrives and stored beside it (and memoised per number meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass

from phonenumbers import PhoneNumberType

from schemas._phone import analyse_number

__all__ = ["PhoneFacts", "phone_facts"]

#: Types that can receive SMS. FIXED_LINE_OR_MOBILE is every NANP number: the numbering
#: plan cannot tell; the carrier lookup (or a 30006 receipt) is the next line of defence.
_TEXTABLE = {
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.PAGER,
    PhoneNumberType.UNKNOWN,
}
_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if isinstance(value, int) and not name.startswith("_")
}


@dataclass(frozen=True, slots=True)
class PhoneFacts:
    valid: bool
    line: str
    """``mobile``, ``fixed_line``, ``fixed_line_or_mobile``, ``voip``, ... or ``invalid``."""
    country: str | None
    """ISO 3166 region code, e.g. ``US``."""
    timezone: str | None
    """The number's zone when it has exactly one, else None (the record's zone is needed)."""

    @property
    def textable(self) -> bool:
        return self.valid and self.line in _TEXTABLE_NAMES


_TEXTABLE_NAMES = frozenset(_NAMES[t] for t in _TEXTABLE)
_INVALID = PhoneFacts(False, "invalid", None, None)


def phone_facts(phone: str) -> PhoneFacts:
    """The number's facts; one ``phonenumbers`` analysis per distinct number, memoised
    (``schemas._phone``) and shared with the schema's E.164 validation."""
    found = analyse_number(phone)
    if not found.valid:
        return _INVALID
    zones = [z for z in found.zones if z != "Etc/Unknown"]
    return PhoneFacts(
        True,
        _NAMES.get(found.number_type, "unknown"),
        found.region,
        zones[0] if len(zones) == 1 else None,
    )
