"""Keyword and phrase classification: a corpus of real-world phrasings, both ways."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.keywords import (
    DEFAULT_OPT_OUT,
    MEMO_SIZE,
    Intent,
    KeywordConfig,
    classify,
    normalize,
)

OPT_OUT_SENDER = [
    "STOP",
    "stop",
    " Stop. ",
    "STOP!!!",
    "'stop'",
    "Stop \U0001f64f",
    "UNSUBSCRIBE",
    "Cancel",
    "END",
    "quit",
    "REVOKE",
    "optout",
    "OPT-OUT",
    "opt out",
    "remove",
    "ARRÊT",
    "arret",
    "TD",
    "Stop please",
    "please stop",
    "stop texting me",
    "Please stop texting me.",
    "STOP TEXTING ME!!",
    "stop messaging me",
    "can you stop sending me these",
    "please stop sending me messages",
    "Stop contacting me",
    "stop the texts",
    "stop these messages please",
    "Don't text me",
    "do not text me again",
    "never contact me again",
    "unsubscribe me",
    "Please unsubscribe me from this",
    "opt me out",
    "remove me from your list",
    "Take me off this list",
    "I want to unsubscribe",
    "i would like to opt out",
    "No more texts",
    "no more messages please",
    "I revoke my consent",
    "Leave me alone",
    "Stop texting me \u2019please\u2019",
    # Keyword plus filler words, repeats, and a keyword leading a sentence.
    "STOP STOP",
    "STOP!!! STOP!!!",
    "Stop now",
    "stop it",
    "STOP IT",
    "pls stop",
    "stop pls",
    "just stop",
    "unsubscribe please",
    "stop thanks",
    "ok stop",
    "remove me",
    "STOP - wrong number",
    "Stop. I moved",
    "Quit texting me",
    "stop outage texts",
    "do not send me texts",
    "don't send me any more texts",
    "stop texting me all night",  # "all" here is not "every sender"
    # Spanish and French (our Spanish texts say "STOP para cancelar").
    "BAJA",
    "CANCELAR",
    "cancelar por favor",
    "PARAR",
    "no más mensajes",
    "quiero darme de baja",
    "arrête",
    # A negation in one clause does not cancel a revocation in the next.
    "Don't stop the power, just stop texting me",
    "I can't stop these texts, unsubscribe me",
]

OPT_OUT_ALL = [
    "STOPALL",
    "stop all",
    "Stop All!",
    "unsubscribe all",
    "stop all these texts",
    "Stop all texts",
    "stop all messages please",
]

NOT_OPT_OUT = [
    "when will the outage end?",
    "When will it stop raining",
    "don't stop the updates, they are useful",
    "please don't stop texting me",
    "Do not stop sending alerts",
    "I can't stop the generator",
    "Cancel my appointment",
    "my power stopped working",
    "the outage should end soon right?",
    "is it the end of the outage",
    "stop sign down at main st",
    "stopping by the office later",
    "Thanks!",
    "ok",
    "Unsubscribed?",  # a question about state, not a request
    "the bus stop has no lights",
    "stopwatch",
    "Do NOT unsubscribe me",
    "please don't unsubscribe me",
    "don't remove me from the list",
    "Why did you stop texting me?",
    "I don't want you to stop texting me",
    "end of the outage?",
    "yes",
]

STATUS = [
    "STATUS",
    "status?",
    "stat",
    "OUT",
    "eta",
    "when will it be fixed?",
    "When will it be fixed",
    "when will power be back?",
    "When is the power coming back on",
    "when will service be restored",
    "is the power back?",
    "Is power back on",
    "is the internet back up",
    "any update?",
    "what's the status",
    "What is the ETA",
    "how long will this take",
    "still no power here",
    "my power is out",
    "power out on elm street",
]


@pytest.mark.parametrize("body", OPT_OUT_SENDER)
def test_opt_out_for_the_sender(body: str) -> None:
    c = classify(body)
    assert c.intent is Intent.OPT_OUT, c
    assert not c.all_senders
    assert c.matched


@pytest.mark.parametrize("body", OPT_OUT_ALL)
def test_opt_out_of_every_sender(body: str) -> None:
    c = classify(body)
    assert c.intent is Intent.OPT_OUT and c.all_senders, c


@pytest.mark.parametrize("body", NOT_OPT_OUT)
def test_ordinary_sentences_are_not_opt_outs(body: str) -> None:
    assert classify(body).intent is not Intent.OPT_OUT


@pytest.mark.parametrize("body", STATUS)
def test_status_questions(body: str) -> None:
    assert classify(body).intent is Intent.STATUS, body


@pytest.mark.parametrize("body", ["START", "start", "Unstop", "SUBSCRIBE"])
def test_opt_in(body: str) -> None:
    c = classify(body)
    assert c.intent is Intent.OPT_IN and not c.conditional


def test_yes_is_an_opt_in_only_conditionally() -> None:
    c = classify("Yes!")
    assert c.intent is Intent.OPT_IN and c.conditional


@pytest.mark.parametrize("body", ["HELP", "help?", "Info", " INFO "])
def test_help(body: str) -> None:
    assert classify(body).intent is Intent.HELP


@pytest.mark.parametrize("body", ["", "   ", "...", "hello there", "thanks for the update"])
def test_other(body: str) -> None:
    assert classify(body).intent is Intent.OTHER


def test_opt_out_wins_over_a_status_question() -> None:
    assert classify("when will you stop texting me").intent is Intent.OPT_OUT


def test_keywords_are_configuration() -> None:
    cfg = KeywordConfig.from_lists(opt_out=["BASTA"], help=["AYUDA"], revocation_phrases=False)
    assert classify("basta", cfg).intent is Intent.OPT_OUT
    assert classify("STOP", cfg).intent is Intent.OTHER
    assert classify("ayuda", cfg).intent is Intent.HELP
    assert classify("stop texting me", cfg).intent is not Intent.OPT_OUT
    assert classify("when will it be fixed?", cfg).intent is Intent.STATUS


def test_normalize() -> None:
    assert normalize("  ¡ARRÊT!  ") == "arret"
    assert normalize("Don\u2019t   text\tme.") == "don't text me"
    assert normalize("OPT-OUT") == "opt-out"


@given(
    word=st.sampled_from([w for w in DEFAULT_OPT_OUT if " " not in w]),
    left=st.text(alphabet=" \t\n.,!?*\"'()", max_size=4),
    right=st.text(alphabet=" \t\n.,!?*\"'()", max_size=4),
    upper=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_any_case_and_surrounding_punctuation(
    word: str, left: str, right: str, upper: list[bool]
) -> None:
    cased = "".join(c.upper() if u else c for c, u in zip(word, upper, strict=False))
    cased += word[len(cased) :]
    assert classify(left + cased + right).intent is Intent.OPT_OUT


@given(st.text(max_size=200))
def test_never_crashes(body: str) -> None:
    assert classify(body).intent in set(Intent)


def _normalize_unicode_path(body: str) -> str:
    """``normalize`` without its ASCII shortcut: NFKD, combining marks dropped, casefold."""
    text = unicodedata.normalize("NFKD", body.replace("\u2019", "'").replace("\u2018", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"^\W+|\W+$", "", text)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_the_ascii_shortcut_normalizes_as_the_unicode_path(body: str) -> None:
    assert normalize(body) == _normalize_unicode_path(body)


@given(st.text(max_size=60) | st.sampled_from(["STOP", "Stop texting me", "when is it back?"]))
def test_classify_given_the_normalized_body_decides_the_same(body: str) -> None:
    assert classify(body, normalized=normalize(body)) == classify(body)


@given(st.lists(st.text(max_size=40) | st.sampled_from(["STOP", "status", "HELP"]), max_size=30))
def test_understand_answers_as_normalize_and_classify_first_time_and_again(
    bodies: list[str],
) -> None:
    cfg = KeywordConfig.from_lists(opt_out=["stop", "halt"])
    for body in bodies + bodies:  # the second round comes from the memory
        assert cfg.understand(body) == (normalize(body), classify(body, cfg))


def test_understand_remembers_a_bounded_number_of_bodies() -> None:
    cfg = KeywordConfig()
    for i in range(MEMO_SIZE + 10):
        cfg.understand(f"message {i}")
    assert len(cfg._memo) <= MEMO_SIZE
    assert cfg.understand("STOP") == (normalize("STOP"), classify("STOP", cfg))
