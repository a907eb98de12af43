"""Phone facts computed once per number: validity, line type, country, single time zone."""

from __future__ import annotations

import random
import re

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import _number_type_helper

from schemas import parse_e164
from schemas._phone import PHONE_CACHE_SIZE, _number_type, _parse_e164, analyse_number
from streams.phones import PhoneFacts, phone_facts

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PLAIN = re.compile(r"\+[1-9][0-9]{1,16}")

INVALID = PhoneFacts(False, "invalid", None, None)


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        ("+14155550123", "America/Los_Angeles"),
        ("+12125550123", "America/New_York"),
        ("+13125550123", "America/Chicago"),
        ("+13035550123", "America/Denver"),
    ],
)
def test_us_numbers_are_textable_fixed_line_or_mobile_with_one_zone(number: str, zone: str) -> None:
    facts = phone_facts(number)
    assert facts == PhoneFacts(True, "fixed_line_or_mobile", "US", zone)
    assert facts.textable


def test_uk_landline_is_fixed_line_and_not_textable() -> None:
    facts = phone_facts("+442079460958")
    assert facts == PhoneFacts(True, "fixed_line", "GB", "Europe/London")
    assert not facts.textable


@pytest.mark.parametrize(
    ("number", "country"),
    [
        ("+447400123456", "GB"),
        # libphonenumber files 07911 1xxxxx under Guernsey, a Crown Dependency sharing +44.
        ("+447911123456", "GG"),
    ],
)
def test_uk_mobiles_are_textable_without_a_single_zone(number: str, country: str) -> None:
    facts = phone_facts(number)
    assert facts == PhoneFacts(True, "mobile", country, None)
    assert facts.textable


def test_us_toll_free_is_valid_but_not_textable() -> None:
    facts = phone_facts("+18005550123")
    assert (facts.valid, facts.line, facts.country) == (True, "toll_free", "US")
    assert facts.timezone is None
    assert not facts.textable


@pytest.mark.parametrize(
    "number",
    [
        "",
        "abc",
        "+",
        "+999",
        "+1415555",  # too short
        "+141555501234",  # too long
        "+15555550123",  # no such area code
        "+447911623456",  # unallocated mobile range
        "4155550123",  # national form: the region is never guessed
        "+44 20 7946 0958 ext",
    ],
)
def test_invalid_numbers_have_no_facts_and_are_not_textable(number: str) -> None:
    facts = phone_facts(number)
    assert facts == INVALID
    assert not facts.textable


@pytest.mark.parametrize(
    ("line", "textable"),
    [
        ("mobile", True),
        ("fixed_line_or_mobile", True),
        ("pager", True),
        ("unknown", True),
        ("fixed_line", False),
        ("voip", False),
        ("toll_free", False),
        ("premium_rate", False),
        ("shared_cost", False),
    ],
)
def test_textable_depends_on_the_line_type(line: str, textable: bool) -> None:
    assert PhoneFacts(True, line, "US", None).textable is textable


def test_an_invalid_number_is_never_textable_whatever_its_line() -> None:
    assert not PhoneFacts(False, "mobile", "US", None).textable


# ---- the memoised analysis answers exactly as the public phonenumbers calls -----------


def _reference_facts(phone: str) -> PhoneFacts:
    """``phone_facts`` as it was before the shared analysis, from public calls only."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return INVALID
    if not phonenumbers.is_valid_number(parsed):
        return INVALID
    names = {v: k.lower() for k, v in vars(PhoneNumberType).items() if isinstance(v, int)}
    zones = [z for z in pn_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return PhoneFacts(
        True,
        names.get(phonenumbers.number_type(parsed), "unknown"),
        phonenumbers.region_code_for_number(parsed),
        zones[0] if len(zones) == 1 else None,
    )


def _reference_e164(value: str) -> str:
    """``parse_e164`` as it was before the shared analysis (after its syntax check)."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        return f"error: not a phone number: {exc}"
    if not phonenumbers.is_valid_number(parsed):
        return "error: not a valid phone number for its country"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _corpus() -> list[str]:
    """Example numbers of every type of every region, and seeded random digits after
    every calling code (mostly invalid, some valid by chance), and their neighbours."""
    rnd = random.Random(6)
    out: set[str] = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
                out.add(e164)
                out.add(e164[:-1] + str((int(e164[-1]) + 1) % 10))
                out.add(e164 + "0")
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    for _ in range(6_000):
        cc = rnd.choice(codes)
        out.add(f"+{cc}{rnd.randrange(10**6, 10**11)}")
    out.update(["", "+", "abc", "+999", "+0123", "+44 20 7946 0958", "+1 (415) 555-0123"])
    return sorted(out)


def test_memoised_analysis_equals_the_public_phonenumbers_calls() -> None:
    corpus = _corpus()
    assert len(corpus) > 8_000
    valid = 0
    for number in corpus:
        facts = phone_facts(number)
        assert facts == _reference_facts(number), number
        valid += facts.valid
        if _E164.fullmatch(number):
            try:
                got = parse_e164(number)
            except ValueError as exc:
                got = f"error: {exc}"
            assert got == _reference_e164(number), number
    assert valid > 1_000  # the corpus exercises the valid path, not only rejections


def test_analysis_is_memoised_and_bounded() -> None:
    analyse_number.cache_clear()
    first = analyse_number("+14155550123")
    assert analyse_number("+14155550123") is first
    assert analyse_number.cache_info().maxsize == PHONE_CACHE_SIZE


def test_the_plain_e164_parse_equals_phonenumbers_parse() -> None:
    """Plain ``+digits``: ``_parse_e164`` answers as ``phonenumbers.parse`` does, and
    declines exactly where parse raises (``analyse_number`` then lets parse say why)."""
    rnd = random.Random(11)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    corpus = [n for n in _corpus() if _PLAIN.fullmatch(n)]
    for _ in range(20_000):
        number = f"+{rnd.choice(codes)}{rnd.randrange(10 ** rnd.randrange(0, 14))}"
        if _PLAIN.fullmatch(number):
            corpus.append(number)
    answered = 0
    for number in corpus:
        mine = _parse_e164(number)
        try:
            theirs: phonenumbers.PhoneNumber | None = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            theirs = None
        assert mine == theirs, number
        answered += mine is not None
    assert answered > 15_000  # the shortcut is taken, not only declined


def test_the_type_table_answers_as_number_type_helper() -> None:
    """``_number_type`` against phonenumbers' own helper, for every region's metadata:
    its example numbers of every type and their neighbours, and random digits."""
    rnd = random.Random(12)
    everywhere = [str(rnd.randrange(10 ** rnd.randrange(1, 17))) for _ in range(150)]
    kinds = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region, None)
        assert metadata is not None
        nsns = set(everywhere)
        for kind in range(12):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                nsn = phonenumbers.national_significant_number(ex)
                nsns.update([nsn, nsn[:-1], nsn + "0", nsn[:-1] + str((int(nsn[-1]) + 1) % 10)])
        for nsn in sorted(nsns):
            want = _number_type_helper(nsn, metadata)
            assert _number_type(nsn, metadata) == want, (region, nsn)
            kinds.add(want)
    assert len(kinds) >= 10  # nearly every type occurs, not only UNKNOWN
