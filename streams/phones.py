"""Facts about a phone number that compliance needs, computed once per number.

Parsing a number with ``phonenumbers`` costs about 100 microseconds: far too slow for a
million-recipient fan-out, cheap at CRM update rate. So these facts are computed when a
customer record arrives and stored beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as pn_timezone

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


def phone_facts(phone: str) -> PhoneFacts:
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return PhoneFacts(False, "invalid", None, None)
    if not phonenumbers.is_valid_number(parsed):
        return PhoneFacts(False, "invalid", None, None)
    line = _NAMES.get(phonenumbers.number_type(parsed), "unknown")
    zones = [z for z in pn_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return PhoneFacts(
        True,
        line,
        phonenumbers.region_code_for_number(parsed),
        zones[0] if len(zones) == 1 else None,
    )
