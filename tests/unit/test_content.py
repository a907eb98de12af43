"""Carrier content rules: whole-word forbidden topics and public URL shorteners."""

from __future__ import annotations

import pytest

from streams.content import DEFAULT_FORBIDDEN, DEFAULT_SHORTENERS, ContentPolicy

DEFAULT = ContentPolicy(DEFAULT_FORBIDDEN, DEFAULT_SHORTENERS)
#: Words whose substrings hide in ordinary place names and words (the Scunthorpe problem).
STRICT = ContentPolicy(["sex", "rapist", "cunt", "ass", "bitter", "thc"], DEFAULT_SHORTENERS)


@pytest.mark.parametrize(
    "text",
    [
        "Transformer failure on Main St. Crews on site.",
        "Power out across Sussex and Essex after the storm",
        "Outage near the therapist's office on Oak Ave",
        "Scunthorpe substation fault; crews en route",
        "A bitterly cold night: warming centre open at Middlesex Hall",
        "Lines down in Massachusetts",
        "Vaporized insulation at the Portland depot",
        "Details: https://status.citypower.example/o/1",
    ],
)
@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
def test_ordinary_outage_text_is_allowed(policy: ContentPolicy, text: str) -> None:
    assert policy.violation(text) is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("Sex offender registry offline", "sex"),
        ("the rapist", "rapist"),
        ("ASS.", "ass"),
        ("bitter-sweet", "bitter"),
        ("(THC)", "thc"),
    ],
)
def test_strict_words_still_match_as_whole_words(text: str, word: str) -> None:
    assert STRICT.violation(text) == f"carrier-forbidden content: {word!r}"


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("Casino night cancelled", "casino"),
        ("free CANNABIS", "cannabis"),
        ("Visit our sportsbook", "sportsbook"),
        ("cheap cigarettes here", "cigarettes"),
        ("Cheap LIQUOR here", "liquor"),
        ("Call our Debt Collection team", "debt collection"),
        ("a DEBT COLLECTOR called", "debt collector"),
        ("XXX", "xxx"),
    ],
)
def test_forbidden_words_are_found_in_any_case(text: str, word: str) -> None:
    assert DEFAULT.violation(text) == f"carrier-forbidden content: {word!r}"


def test_configured_words_are_trimmed_and_lowercased() -> None:
    policy = ContentPolicy(["  Casino ", "", "   "], [])
    assert policy.violation("casino") == "carrier-forbidden content: 'casino'"
    assert policy.violation("CASINO") == "carrier-forbidden content: 'casino'"
    assert policy.violation("nothing to see") is None


def test_empty_word_list_checks_only_shorteners() -> None:
    policy = ContentPolicy([], ["bit.ly"])
    assert policy.violation("casino cannabis xxx") is None
    assert policy.violation("bit.ly/x") is not None


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("Details at bit.ly/abc", "bit.ly"),
        ("Details at bit.ly", "bit.ly"),
        ("Map: https://TinyURL.com/outage-map", "tinyurl.com"),
        ("see (t.co/abc)", "t.co"),
        ("status goo.gl.", "goo.gl"),
        ("http://bit.ly:80/x", "bit.ly"),
        ("https://user@is.gd/x", "is.gd"),
        ("Info:https://rb.gy/x?y=1#z", "rb.gy"),
        ("HTTPS://S.ID/ABC", "s.id"),
    ],
)
def test_public_shorteners_in_text_are_refused(text: str, host: str) -> None:
    assert DEFAULT.violation(text) == f"public URL shortener {host!r} (carriers filter these)"


@pytest.mark.parametrize(
    "url", ["https://bit.ly/3xYz", "https://T.LY/abc", "https://cutt.ly/o?x=1", "https://ow.ly"]
)
def test_shortener_as_the_status_url_is_refused(url: str) -> None:
    reason = DEFAULT.violation("Transformer failure on Main St.", url)
    assert reason is not None
    assert reason.startswith("public URL shortener")


@pytest.mark.parametrize(
    "text",
    [
        "bitterly cold",
        "https://rabbit.ly.example.com/status",
        "https://status.citypower.example/is.gd-style",
        "Crews at site.Is good",
        "outage at.com",
        "https://habit.lyrics.example/x",
        "Restore ETA 5.30 today",
    ],
)
def test_hosts_that_merely_contain_a_shortener_are_allowed(text: str) -> None:
    assert DEFAULT.violation(text) is None


def test_configured_shorteners_are_trimmed_and_lowercased() -> None:
    policy = ContentPolicy([], [" Go.Example ", ""])
    assert policy.violation("https://go.example/x") is not None
    assert policy.violation("https://GO.EXAMPLE/x") is not None
    assert policy.violation("https://bit.ly/x") is None


def test_every_text_is_checked_and_missing_ones_are_skipped() -> None:
    assert DEFAULT.violation() is None
    assert DEFAULT.violation(None, "", "fine") is None
    assert DEFAULT.violation("fine", None, "casino") == "carrier-forbidden content: 'casino'"
    assert DEFAULT.violation("casino", "https://bit.ly/x") == "carrier-forbidden content: 'casino'"


def test_default_lists_are_lowercase_and_unique() -> None:
    for words in (DEFAULT_FORBIDDEN, DEFAULT_SHORTENERS):
        assert all(w == w.strip().lower() for w in words)
        assert len(set(words)) == len(words)


@pytest.mark.parametrize("url", ["https://www.bit.ly/abc", "https://www.tinyurl.com/abc"])
def test_subdomain_of_a_shortener_is_refused(url: str) -> None:
    assert DEFAULT.violation("Outage", url) is not None
