"""Outage texts: per kind and language, one segment, obligations kept; local ETA formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Encoding, MessageKind
from streams.sms_text import GSM7_SINGLE, segment_info
from streams.templates import LANGUAGES, Templates, format_eta

URL = "https://status.citypower.example/o/1"
SUMMARY = "Transformer failure on Main St."
T = Templates("City Power")
ALERT, UPDATE, RESTORED = MessageKind.ALERT, MessageKind.UPDATE, MessageKind.RESTORED
STOP = {"en": " Reply STOP to opt out.", "es": " Responda STOP para cancelar."}

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "language", "eta", "first", "body"),
    [
        (
            ALERT,
            "en",
            "2:00 PM",
            True,
            "City Power: Outage in your area. Transformer failure on Main St. "
            f"Est. restore 2:00 PM. Info: {URL} Reply STOP to opt out.",
        ),
        (
            ALERT,
            "en",
            None,
            False,
            "City Power: Outage in your area. Transformer failure on Main St. "
            f"Restore time not yet known. Info: {URL}",
        ),
        (
            UPDATE,
            "en",
            "Tue 9:30 AM",
            False,
            "City Power update: Transformer failure on Main St. "
            f"Est. restore Tue 9:30 AM. Info: {URL}",
        ),
        (
            RESTORED,
            "en",
            "2:00 PM",
            False,
            f"City Power: Service has been restored in your area. Info: {URL}",
        ),
        (
            ALERT,
            "es",
            "14:00",
            False,
            "City Power: Corte de servicio en su zona. Transformer failure on Main St. "
            f"Restablecimiento estimado: 14:00. Info: {URL}",
        ),
        (
            UPDATE,
            "es",
            None,
            False,
            "City Power actualizacion: Transformer failure on Main St. "
            f"Hora de restablecimiento aun desconocida. Info: {URL}",
        ),
        (
            RESTORED,
            "es",
            None,
            True,
            "City Power: El servicio se ha restablecido en su zona. "
            f"Info: {URL} Responda STOP para cancelar.",
        ),
    ],
)
def test_render_fills_the_template(
    kind: MessageKind, language: str, eta: str | None, first: bool, body: str
) -> None:
    rendered = T.render(kind, language, SUMMARY, eta, URL, first)
    assert rendered.body == body
    assert rendered.encoding is Encoding.GSM7
    assert rendered.segments == 1


@pytest.mark.parametrize("kind", [ALERT, UPDATE, RESTORED])
@pytest.mark.parametrize("language", ["en", "es"])
def test_stop_footer_only_on_the_first_message(kind: MessageKind, language: str) -> None:
    first = T.render(kind, language, "Storm", "9:00", URL, True).body
    later = T.render(kind, language, "Storm", "9:00", URL, False).body
    assert first.endswith(STOP[language])
    assert "STOP" not in later
    assert first == later + STOP[language]


def test_restored_text_carries_neither_summary_nor_eta() -> None:
    body = T.render(RESTORED, "en", "Storm damage", "9:00 AM", URL, False).body
    assert "Storm damage" not in body
    assert "9:00" not in body


def test_no_status_url_means_no_info_part() -> None:
    body = T.render(ALERT, "en", SUMMARY, "2:00 PM", None, False).body
    assert body == (
        "City Power: Outage in your area. Transformer failure on Main St. Est. restore 2:00 PM."
    )


@pytest.mark.parametrize(
    ("language", "prefix"),
    [
        ("es", "City Power: Corte de servicio"),
        ("es-MX", "City Power: Corte de servicio"),
        ("en-GB", "City Power: Outage in your area."),
        ("fr", "City Power: Outage in your area."),
        ("", "City Power: Outage in your area."),
    ],
)
def test_unknown_languages_fall_back_to_their_base_then_english(language: str, prefix: str) -> None:
    assert T.render(ALERT, language, SUMMARY, None, URL, False).body.startswith(prefix)


@pytest.mark.parametrize("kind", [MessageKind.REPLY, MessageKind.HELP, MessageKind.CONFIRMATION])
def test_non_outage_kinds_have_no_template(kind: MessageKind) -> None:
    with pytest.raises(ValueError, match=kind.value):
        T.render(kind, "en", SUMMARY, None, URL, False)


def test_templates_are_gsm7_so_spanish_does_not_fall_back_to_ucs2() -> None:
    for lang in LANGUAGES.values():
        for part in (lang.alert, lang.update, lang.restored, lang.eta, lang.eta_unknown):
            assert segment_info(part).encoding is Encoding.GSM7
        assert segment_info(lang.stop + " ".join(lang.weekdays)).encoding is Encoding.GSM7


def test_smart_punctuation_is_transliterated_to_keep_gsm7() -> None:
    t = Templates("Joe\u2019s Power")
    rendered = t.render(
        ALERT, "en", "\u201cMain\u201d feeder \u2013 tripped\u2026", None, URL, True
    )
    assert rendered.body.startswith('Joe\'s Power: Outage in your area. "Main" feeder - tripped...')
    assert rendered.encoding is Encoding.GSM7


def test_long_summary_is_shortened_and_the_obligations_are_kept() -> None:
    summary = "Crews are replacing a failed transformer near the Elm Street substation " * 4
    rendered = T.render(ALERT, "en", summary, "Tue 11:30 AM", URL, True)
    assert rendered.segments == 1
    assert len(rendered.body) <= GSM7_SINGLE
    assert "..." in rendered.body
    assert rendered.body.startswith("City Power: Outage in your area. Crews are replacing")
    assert rendered.body.endswith(f" Est. restore Tue 11:30 AM. Info: {URL} Reply STOP to opt out.")


def test_more_segments_allowed_keeps_more_of_the_summary() -> None:
    summary = "Crews are replacing a failed transformer near the Elm Street substation. " * 3
    rendered = Templates("City Power", max_segments=3).render(ALERT, "en", summary, None, URL, True)
    assert summary.strip() in rendered.body
    assert rendered.segments == segment_info(rendered.body).segments == 3


_plain = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=500
)
_any = st.text(min_size=1, max_size=500)


@settings(max_examples=150, deadline=None)
@given(
    summary=_plain,
    kind=st.sampled_from([ALERT, UPDATE, RESTORED]),
    language=st.sampled_from(["en", "es"]),
    eta=st.sampled_from([None, "9:05 AM", "Wed 11:30 PM", "23:59", "mie 23:59"]),
    first=st.booleans(),
)
def test_plain_text_is_always_one_gsm7_segment_with_url_and_stop_kept(
    summary: str, kind: MessageKind, language: str, eta: str | None, first: bool
) -> None:
    rendered = T.render(kind, language, summary, eta, URL, first)
    assert rendered.segments == 1
    assert rendered.encoding is Encoding.GSM7
    assert segment_info(rendered.body).segments == 1
    assert f"Info: {URL}" in rendered.body
    assert rendered.body.endswith(STOP[language]) is first
    assert rendered.body.startswith("City Power")


@settings(max_examples=150, deadline=None)
@given(summary=_any, language=st.sampled_from(["en", "es"]), first=st.booleans())
def test_any_summary_fits_one_segment_and_keeps_the_status_url(
    summary: str, language: str, first: bool
) -> None:
    rendered = T.render(UPDATE, language, summary, "Wed 11:30 PM", URL, first)
    info = segment_info(rendered.body)
    assert rendered.segments == info.segments == 1
    assert rendered.encoding is info.encoding
    assert f"Info: {URL}" in rendered.body
    assert rendered.body.endswith(STOP[language]) is first


@pytest.mark.parametrize(
    ("language", "eta", "url"),
    [
        # 60 characters: a realistic status link; a first Spanish alert loses its footer.
        ("es", "lun 14:30", "https://status.citypowerandlight.com/outages/OUT-2024-000123"),
        # 77 characters (the schema allows 200): English loses its footer too.
        (
            "en",
            "Tue 11:30 AM",
            "https://status.citypowerandlight.com/outages/2024/11/23/OUT-2024-000123?r=sms",
        ),
    ],
)
def test_first_alert_keeps_url_and_stop_footer_with_a_long_status_url(
    language: str, eta: str, url: str
) -> None:
    rendered = T.render(ALERT, language, SUMMARY, eta, url, True)
    assert url in rendered.body
    assert rendered.body.endswith(STOP[language])


# --- format_eta --------------------------------------------------------------------------


def test_no_eta_formats_to_none() -> None:
    assert format_eta(None, UTC_ZONE, at(2024, 7, 1, 12, 0), "en") is None


@pytest.mark.parametrize(
    ("eta", "language", "text"),
    [
        (at(2024, 7, 1, 14, 5), "en", "2:05 PM"),
        (at(2024, 7, 1, 9, 30), "en", "9:30 AM"),
        (at(2024, 7, 1, 12, 0), "en", "12:00 PM"),
        (at(2024, 7, 1, 23, 59), "en", "11:59 PM"),
        (at(2024, 7, 1, 14, 5), "es", "14:05"),
        (at(2024, 7, 1, 9, 30), "es", "09:30"),
        (at(2024, 7, 1, 0, 0), "es", "00:00"),
        (at(2024, 7, 1, 0, 0), "en", "12:00 AM"),
        (at(2024, 7, 1, 14, 5), "es-MX", "14:05"),
        (at(2024, 7, 1, 14, 5), "fr", "2:05 PM"),
    ],
)
def test_same_day_eta_is_a_bare_clock_12h_in_english_24h_in_spanish(
    eta: datetime, language: str, text: str
) -> None:
    assert format_eta(eta, UTC_ZONE, at(2024, 7, 1, 0, 0), language) == text


@pytest.mark.parametrize(
    ("eta", "language", "text"),
    [
        (at(2024, 7, 2, 9, 30), "en", "Tue 9:30 AM"),
        (at(2024, 7, 2, 9, 30), "es", "mar 09:30"),
        (at(2024, 7, 7, 18, 0), "en", "Sun 6:00 PM"),
        (at(2024, 7, 7, 18, 0), "es", "dom 18:00"),
        (at(2024, 6, 30, 23, 0), "en", "Sun 11:00 PM"),
    ],
)
def test_other_day_eta_names_the_weekday(eta: datetime, language: str, text: str) -> None:
    assert format_eta(eta, UTC_ZONE, at(2024, 7, 1, 12, 0), language) == text


@pytest.mark.parametrize(
    ("eta", "text"),
    [
        (at(2024, 7, 1, 20, 0), "4:00 PM"),  # EDT, UTC-4
        (at(2024, 1, 15, 20, 0), "3:00 PM"),  # EST, UTC-5
        (at(2024, 3, 10, 14, 0), "10:00 AM"),  # the day the clocks spring forward
        (at(2024, 11, 3, 14, 0), "9:00 AM"),  # the day they fall back
    ],
)
def test_eta_follows_daylight_saving_time(eta: datetime, text: str) -> None:
    now = eta.replace(hour=12)
    assert format_eta(eta, NEW_YORK, now, "en") == text


@pytest.mark.parametrize(
    ("zone", "text"),
    [(UTC_ZONE, "5:00 AM"), (NEW_YORK, "Mon 1:00 AM"), (LOS_ANGELES, "10:00 PM")],
)
def test_today_is_decided_in_the_recipients_zone(zone: ZoneInfo, text: str) -> None:
    # Now is 03:00 UTC on Monday 1 July: Sunday 23:00 in New York, Sunday 20:00 in Los
    # Angeles. The ETA, 05:00 UTC, is Monday 01:00 in New York, Sunday 22:00 in Los Angeles.
    assert format_eta(at(2024, 7, 1, 5, 0), zone, at(2024, 7, 1, 3, 0), "en") == text
