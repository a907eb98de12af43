"""Segment counting, transliteration and fitting: the boundaries that cost money."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Encoding
from streams.sms_text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    TRANSLITERATIONS,
    SegmentInfo,
    fit,
    is_gsm7,
    segment_info,
    septets,
    split_segments,
    transliterate,
    ucs2_units,
)

EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16
CYR = "ж"  # in the BMP, not in GSM-7
GSM, UCS2 = Encoding.GSM7, Encoding.UCS2

FAST = settings(max_examples=200, deadline=None)

_basic = st.sampled_from(sorted(GSM7_BASIC))
_ext = st.sampled_from(sorted(GSM7_EXTENSION))
_smart = st.sampled_from(sorted(TRANSLITERATIONS))
_other = st.sampled_from(["ç", "ł", CYR, "中", EMOJI, "\U0001f3fd", "\u200d", "\x1b"])
#: Mostly GSM-7 so long texts stay GSM-7 often enough to exercise both encodings.
chars = st.one_of(_basic, _basic, _basic, _ext, _smart, _other, st.characters())
texts = st.text(alphabet=chars, max_size=500)
gsm_texts = st.text(alphabet=st.one_of(_basic, _ext), max_size=400)


def units_in(text: str, encoding: Encoding) -> int:
    return septets(text) if encoding is GSM else ucs2_units(text)


def test_alphabet_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes less ESC
    assert len(GSM7_EXTENSION) == 10  # form feed ^ { } \ [ ~ ] | €
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert {"\n", "\r", " ", "@", "Δ", "Ç", "ß", "à"} <= GSM7_BASIC
    assert not is_gsm7("\x1b")
    assert not is_gsm7("ç")  # only the capital is in the table
    assert not is_gsm7("`")


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments", "per_segment"),
    [
        ("", GSM, 0, 1, 160),
        ("a" * 160, GSM, 160, 1, 160),
        ("a" * 161, GSM, 161, 2, 153),
        ("a" * 306, GSM, 306, 2, 153),
        ("a" * 307, GSM, 307, 3, 153),
        ("€" * 80, GSM, 160, 1, 160),
        ("€" * 81, GSM, 162, 2, 153),
        ("a" * 159 + "€", GSM, 161, 2, 153),
        ("a" * 152 + "€" + "b" * 152, GSM, 306, 3, 153),  # ceil(306 / 153) would say 2
        (CYR * 70, UCS2, 70, 1, 70),
        (CYR * 71, UCS2, 71, 2, 67),
        (CYR * 134, UCS2, 134, 2, 67),
        (CYR * 135, UCS2, 135, 3, 67),
        (EMOJI * 35, UCS2, 70, 1, 70),
        (EMOJI * 36, UCS2, 72, 2, 67),
        ("a" * 66 + EMOJI + "b" * 66, UCS2, 134, 3, 67),  # ceil(134 / 67) would say 2
        ("a" * 159 + "ç", UCS2, 160, 3, 67),  # one character switches the whole message
    ],
)
def test_segment_info(
    text: str, encoding: Encoding, units: int, segments: int, per_segment: int
) -> None:
    assert segment_info(text) == SegmentInfo(encoding, units, segments, per_segment)
    assert len(split_segments(text)) == segments


def test_extension_char_moves_whole_to_the_next_segment() -> None:
    chunks = split_segments("a" * 152 + "€" + "b" * 10)
    assert chunks == ["a" * 152, "€" + "b" * 10]


def test_surrogate_pair_moves_whole_to_the_next_segment() -> None:
    chunks = split_segments("a" * 66 + EMOJI + "b" * 10)
    assert chunks == ["a" * 66, EMOJI + "b" * 10]


def test_empty_text_is_one_empty_segment() -> None:
    assert split_segments("") == [""]


def test_septets_rejects_non_gsm() -> None:
    assert septets("a€{") == 5
    with pytest.raises(ValueError, match="U\\+0436"):
        septets("a" + CYR)


def test_ucs2_units_counts_surrogate_pairs() -> None:
    assert ucs2_units("a€" + CYR + EMOJI) == 5


def test_transliteration_keeps_smart_quotes_messages_gsm7() -> None:
    raw = "“Power’s back” – crews\u00a0left… • Thanks\u202fall — 5\u22123"
    assert not is_gsm7(raw)
    plain = transliterate(raw)
    assert plain == '"Power\'s back" - crews left... - Thanks all - 5-3'
    assert segment_info(plain).encoding is GSM


def test_transliteration_keeps_what_it_cannot_map() -> None:
    text = f"Outage 中 {EMOJI} ç ł \U0001f469\u200d\U0001f527"
    assert transliterate(text) == text


def test_transliteration_table_maps_only_non_gsm_to_gsm() -> None:
    for source, target in TRANSLITERATIONS.items():
        assert not is_gsm7(source), source
        assert is_gsm7(target), source


def test_fit_returns_text_that_already_fits() -> None:
    assert fit("Outage: ", "north side", ". Reply STOP to opt out") == (
        "Outage: north side. Reply STOP to opt out"
    )


def test_fit_cuts_the_variable_at_a_word_boundary() -> None:
    prefix, suffix = "Outage: ", " Reply STOP to opt out"
    summary = "crews are replacing a transformer on Main St, " * 10
    out = fit(prefix, summary, suffix)
    assert out.startswith(prefix) and out.endswith("..." + suffix)
    assert segment_info(out).segments == 1
    kept = out[len(prefix) : -len("..." + suffix)]
    assert summary.startswith(kept)
    assert summary[len(kept)] in " ,"  # ended on a word, trailing comma dropped
    assert not kept.endswith(",")
    assert len(out) > 150  # used the room that was there


def test_fit_hard_cuts_a_variable_without_spaces() -> None:
    out = fit("Ref: ", "x" * 300, "")
    assert out == "Ref: " + "x" * 152 + "..."


def test_fit_switches_back_to_gsm7_when_the_cut_removes_the_only_ucs2_char() -> None:
    out = fit("Outage: ", "a" * 150 + EMOJI, "")
    assert out == "Outage: " + "a" * 149 + "..."
    assert segment_info(out) == SegmentInfo(GSM, 160, 1, 160)


def test_fit_keeps_ucs2_when_the_template_needs_it() -> None:
    out = fit("Авария: ", "a" * 200, "")
    assert segment_info(out).encoding is UCS2
    assert ucs2_units(out) == 70 and out.endswith("...")


def test_fit_never_splits_an_extension_char_or_emoji() -> None:
    assert fit("", "€" * 100, "") == "€" * 78 + "..."  # 156 + 3 septets
    out = fit("", EMOJI * 50, "")
    assert out == EMOJI * 33 + "..."  # 66 + 3 units, one short of 70
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in out)


def test_fit_honours_max_chars_and_max_segments() -> None:
    out = fit("A: ", "word " * 200, " STOP", max_segments=3, max_chars=400)
    assert segment_info(out).segments <= 3 and len(out) <= 400
    assert fit("", "abc def ghi", "", max_chars=8) == "abc..."


def test_fit_drops_the_variable_then_truncates_an_oversized_template() -> None:
    assert fit("a" * 156, "variable", "!") == "a" * 156 + "...!"
    assert fit("a" * 157, "variable", "!") == "a" * 157 + "!"
    assert fit("a" * 158, "variable", "!!") == "a" * 158 + "!!"
    assert fit("a" * 158, "variable", "!!!") == "a" * 158 + "!!"
    assert fit("Hi ", "there", " STOP", max_chars=0) == ""


def test_fit_rejects_impossible_limits() -> None:
    with pytest.raises(ValueError, match="max_segments"):
        fit("", "", "", max_segments=0)
    with pytest.raises(ValueError, match="max_chars"):
        fit("", "", "", max_chars=-1)


@FAST
@given(texts)
def test_split_segments_rejoins(text: str) -> None:
    assert "".join(split_segments(text)) == text


@FAST
@given(texts)
def test_split_agrees_with_segment_info(text: str) -> None:
    info = segment_info(text)
    chunks = split_segments(text)
    assert len(chunks) == info.segments
    assert info.encoding is (GSM if is_gsm7(text) else UCS2)
    assert info.units == units_in(text, info.encoding)
    assert all(units_in(c, info.encoding) <= info.per_segment for c in chunks)
    assert all(chunks) or chunks == [""]


@FAST
@given(texts, chars)
def test_appending_never_reduces_segments(text: str, char: str) -> None:
    assert segment_info(text + char).segments >= segment_info(text).segments


@FAST
@given(texts)
def test_transliterate_is_idempotent(text: str) -> None:
    once = transliterate(text)
    assert transliterate(once) == once


@FAST
@given(gsm_texts)
def test_transliterate_leaves_gsm7_alone(text: str) -> None:
    assert transliterate(text) == text


@FAST
@given(st.text(alphabet=st.one_of(_basic, _ext, _smart), max_size=300))
def test_transliterate_makes_smart_text_gsm7(text: str) -> None:
    assert is_gsm7(transliterate(text))


@FAST
@given(
    prefix=st.text(alphabet=chars, max_size=120),
    variable=texts,
    suffix=st.text(alphabet=chars, max_size=60),
    max_segments=st.integers(min_value=1, max_value=4),
    max_chars=st.integers(min_value=0, max_value=765),
    ellipsis=st.sampled_from(["...", "", "…"]),
)
def test_fit_respects_limits_and_template(
    prefix: str, variable: str, suffix: str, max_segments: int, max_chars: int, ellipsis: str
) -> None:
    out = fit(
        prefix, variable, suffix, max_segments=max_segments, max_chars=max_chars, ellipsis=ellipsis
    )
    assert segment_info(out).segments <= max_segments
    assert ucs2_units(out) <= max_chars and len(out) <= max_chars
    bare = prefix + suffix
    if segment_info(bare).segments <= max_segments and ucs2_units(bare) <= max_chars:
        assert out.startswith(prefix) and out.endswith(suffix)
        middle = out[len(prefix) : len(out) - len(suffix)]
        if middle != variable and middle:
            assert middle.endswith(ellipsis)
            assert variable.startswith(middle[: len(middle) - len(ellipsis)])
    else:
        assert bare.startswith(out)
