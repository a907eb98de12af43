"""The sender pool: sticky choice, only active senders, per-country, throughput projection."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.errors import ConfigurationError
from streams.senders import (
    PoolFindings,
    Projection,
    Sender,
    SenderPool,
    SenderStatus,
    SenderType,
    check_pool,
    parse_pool,
)


def pool_of(*senders: dict[str, Any]) -> SenderPool:
    return parse_pool(orjson.dumps(list(senders)).decode())


def sender(sid: str, countries: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "type": "short_code", "countries": countries or ["US"], **extra}


PHONES = [f"+1415555{n:04d}" for n in range(300)]


def test_parse_pool_reads_every_field() -> None:
    pool = parse_pool(
        '[{"id": 87654, "type": "short_code", "rate": 50, "countries": ["us", "Ca"],'
        ' "status": "pending", "per_segment": false, "daily_cap": 1000}]'
    )
    assert pool.senders == (
        Sender(
            id="87654",
            type=SenderType.SHORT_CODE,
            rate=50.0,
            countries=frozenset({"US", "CA"}),
            status=SenderStatus.PENDING,
            per_segment=False,
            daily_cap=1000,
        ),
    )
    assert pool.by_id["87654"] is pool.senders[0]


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        ("long_code", 1.0),
        ("10dlc", 4.0),
        ("toll_free", 3.0),
        ("short_code", 100.0),
        ("alphanumeric", 10.0),
    ],
)
def test_parse_pool_defaults_rate_by_type_and_status_active(kind: str, rate: float) -> None:
    (s,) = pool_of({"id": "S1", "type": kind, "countries": ["US"]}).senders
    assert s.rate == rate
    assert s.status is SenderStatus.ACTIVE
    assert s.per_segment is True
    assert s.daily_cap is None
    assert s.usable


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"id": "1"}', "non-empty JSON list"),
        ("[]", "non-empty JSON list"),
        ("null", "non-empty JSON list"),
        ('[{"type": "short_code", "countries": ["US"]}]', "entry 0 is invalid"),
        ('[{"id": "1", "countries": ["US"]}]', "entry 0 is invalid"),
        ('[{"id": "1", "type": "carrier_pigeon", "countries": ["US"]}]', "entry 0 is invalid"),
        ('[{"id": "1", "type": "short_code"}]', "entry 0 is invalid"),
        ('[{"id": "1", "type": "short_code", "countries": null}]', "entry 0 is invalid"),
        ('[{"id": "1", "type": "short_code", "countries": 1}]', "entry 0 is invalid"),
        (
            '[{"id": "1", "type": "short_code", "countries": ["US"], "status": "retired"}]',
            "entry 0 is invalid",
        ),
        (
            '[{"id": "1", "type": "short_code", "countries": ["US"], "rate": "fast"}]',
            "entry 0 is invalid",
        ),
        ('[{"id": "1", "type": "short_code", "countries": ["US"]}, "87654"]', "entry 1 is invalid"),
        ('[{"id": "1", "type": "short_code", "countries": ["US"]}, null]', "entry 1 is invalid"),
        (
            '[{"id": "1", "type": "short_code", "countries": ["US"]},'
            ' {"id": "1", "type": "long_code", "countries": ["CA"]}]',
            "sender id twice",
        ),
    ],
)
def test_parse_pool_errors_name_the_setting(text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match="OUTAGE_SMS_SENDERS") as info:
        parse_pool(text)
    assert needle in str(info.value)


def test_invalid_entry_error_lists_the_sender_types() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_pool('[{"id": "1", "type": "pigeon", "countries": ["US"]}]')
    for kind in SenderType:
        assert kind.value in str(info.value)


def test_countries_given_as_a_string_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OUTAGE_SMS_SENDERS"):
        parse_pool('[{"id": "87654", "type": "short_code", "countries": "US"}]')


def test_only_sender_for_a_country_is_always_chosen() -> None:
    pool = pool_of(sender("87654", ["US"]))
    assert {pool.choose(p, "US").id for p in PHONES} == {"87654"}  # type: ignore[union-attr]


def test_choice_is_sticky_and_independent_of_config_order() -> None:
    senders = [sender("11111"), sender("22222"), sender("33333")]
    one = pool_of(*senders)
    other = pool_of(*reversed(senders))
    for p in PHONES:
        chosen = one.choose(p, "US")
        assert chosen is not None
        assert one.choose(p, "US") == chosen
        assert other.choose(p, "US") == chosen


def test_choice_spreads_numbers_over_the_senders() -> None:
    pool = pool_of(sender("11111"), sender("22222"), sender("33333"))
    spread = Counter(pool.choose(p, "US").id for p in PHONES)  # type: ignore[union-attr]
    assert set(spread) == {"11111", "22222", "33333"}
    assert min(spread.values()) > len(PHONES) / 6


_CHOOSE_IN_ANOTHER_PROCESS = """
import sys
from streams.senders import parse_pool
pool = parse_pool(sys.argv[1])
print(",".join(pool.choose(f"+1415555{n:04d}", "US").id for n in range(300)))
"""


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_choice_is_the_same_in_every_process(hash_seed: str) -> None:
    # Workers on other hosts and after restarts must pick the same sender for a number:
    # Python's salted hash() would not.
    config = orjson.dumps([sender("11111"), sender("22222"), sender("33333")]).decode()
    here = [parse_pool(config).choose(p, "US").id for p in PHONES]  # type: ignore[union-attr]
    out = subprocess.run(
        [sys.executable, "-c", _CHOOSE_IN_ANOTHER_PROCESS, config],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        timeout=60,
    )
    assert out.stdout.strip().split(",") == here


@pytest.mark.parametrize(
    "inactive",
    [
        {"status": "pending"},
        {"status": "suspended"},
        {"rate": 0},
    ],
    ids=["pending", "suspended", "zero-rate"],
)
def test_senders_that_are_not_active_are_never_chosen(inactive: dict[str, Any]) -> None:
    pool = pool_of(sender("11111"), sender("22222", **inactive), sender("33333", **inactive))
    assert {pool.choose(p, "US").id for p in PHONES} == {"11111"}  # type: ignore[union-attr]
    only_inactive = pool_of(sender("22222", **inactive))
    assert all(only_inactive.choose(p, "US") is None for p in PHONES)


def test_choice_filters_by_country() -> None:
    pool = pool_of(
        sender("11111", ["US"]),
        sender("22222", ["CA"]),
        sender("33333", ["us", "ca"]),
        {"id": "CityPower", "type": "alphanumeric", "countries": ["GB"]},
    )
    us = {pool.choose(p, "US").id for p in PHONES}  # type: ignore[union-attr]
    ca = {pool.choose(p, "CA").id for p in PHONES}  # type: ignore[union-attr]
    assert us == {"11111", "33333"}
    assert ca == {"22222", "33333"}
    assert pool.choose(PHONES[0], "GB").id == "CityPower"  # type: ignore[union-attr]


@pytest.mark.parametrize("country", [None, "", "FR", "us"])
def test_no_sender_for_an_unknown_or_unserved_country(country: str | None) -> None:
    pool = pool_of(sender("11111", ["US"]))
    assert pool.choose(PHONES[0], country) is None


def test_pool_rejects_duplicate_ids_built_directly() -> None:
    s = Sender("1", SenderType.SHORT_CODE, 100.0, frozenset({"US"}))
    with pytest.raises(ConfigurationError, match="OUTAGE_SMS_SENDERS"):
        SenderPool([s, s])


def test_project_is_work_over_rate_and_the_slowest_sender_wins() -> None:
    pool = pool_of(sender("11111", rate=100), sender("22222", rate=4), sender("33333", rate=1))
    projection = pool.project({"11111": 300, "22222": 20, "33333": 0})
    assert projection.by_sender == {"11111": 3.0, "22222": 5.0}
    assert projection.seconds == 5.0


def test_project_share_of_the_rate_scales_time() -> None:
    pool = pool_of(sender("11111", rate=100))
    assert pool.project({"11111": 300}, share=0.25).seconds == pytest.approx(12.0)


def test_project_nothing_is_zero() -> None:
    pool = pool_of(sender("11111"))
    assert pool.project({}) == Projection(0.0, {})


def test_project_work_on_a_zero_rate_sender_never_finishes() -> None:
    pool = pool_of(sender("11111", rate=0))
    assert math.isinf(pool.project({"11111": 1}).seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0m00s"),
        (0.2, "0m01s"),
        (59.2, "1m00s"),
        (3599.0, "59m59s"),
        (3600.0, "1h00m00s"),
        (100_000.0, "27h46m40s"),
    ],
)
def test_projection_describe_rounds_up_to_whole_seconds(seconds: float, text: str) -> None:
    assert Projection(seconds).describe() == text


def test_adding_a_sender_moves_numbers_only_to_the_new_sender() -> None:
    def pool(*ids: str) -> SenderPool:
        return parse_pool(
            "["
            + ",".join(f'{{"id": "{i}", "type": "short_code", "countries": ["US"]}}' for i in ids)
            + "]"
        )

    before, after = pool("11111", "22222"), pool("11111", "22222", "33333")
    phones = [f"+1415555{i:04d}" for i in range(3000)]
    moved = [p for p in phones if before.choose(p, "US") != after.choose(p, "US")]
    assert moved, "the new sender takes a share"
    assert all(after.choose(p, "US").id == "33333" for p in moved)  # type: ignore[union-attr]


# ---- start-up checks of the pool --------------------------------------------------


def test_a_pool_of_active_senders_with_valid_ids_passes_quietly() -> None:
    findings = check_pool(pool_of(sender("87654", ["US", "CA"]), sender("+14155550100", ["US"])))
    assert findings == PoolFindings((), ())


def test_a_pool_without_any_active_sender_is_an_error_naming_each_sender() -> None:
    findings = check_pool(
        pool_of(sender("87654", status="pending"), sender("87655", status="suspended"))
    )
    (error,) = findings.errors
    assert "no active sender" in error and "OUTAGE_SMS_SENDERS" in error
    assert "87654 (pending)" in error and "87655 (suspended)" in error


def test_a_sender_with_zero_rate_counts_as_unusable() -> None:
    findings = check_pool(pool_of(sender("87654", rate=0)))
    assert any("no active sender" in e for e in findings.errors)
    assert any("rate 0" in w for w in findings.warnings)


def test_an_inactive_sender_and_the_country_only_it_serves_are_warned_about() -> None:
    findings = check_pool(
        pool_of(sender("87654", ["US"]), sender("+447911123457", ["GB"], status="pending"))
    )
    assert findings.errors == ()
    pending, country = findings.warnings
    assert "+447911123457" in pending and "pending" in pending and '"active"' in pending
    assert "no active sender serves GB" in country and "no_sender" in country


@pytest.mark.parametrize(
    ("sid", "needle"),
    [
        ("CityPower", "neither an E.164 number"),
        ("+1 415 555 0100", "neither an E.164 number"),
        ("12", "neither an E.164 number"),
        ("+15555550100", "neither an E.164 number"),  # no such area code
        ("+4402079460958", "write it as '+442079460958'"),
    ],
)
def test_an_active_sender_whose_id_the_command_contract_cannot_carry_is_an_error(
    sid: str, needle: str
) -> None:
    findings = check_pool(pool_of(sender("87654"), {**sender(sid), "type": "long_code"}))
    (error,) = findings.errors
    assert needle in error and "OUTAGE_SMS_SENDERS" in error


def test_an_inactive_sender_with_an_unusable_id_is_only_warned_about() -> None:
    findings = check_pool(pool_of(sender("87654"), sender("CityPower", status="pending")))
    assert findings.errors == ()
    assert len(findings.warnings) == 1
