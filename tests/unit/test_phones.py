"""Phone facts computed once per number: validity, line type, country, single time zone."""

from __future__ import annotations

import pytest

from streams.phones import PhoneFacts, phone_facts

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
