"""Planning the throughput wall: the slowest sender sets the pace, and what-ifs say what
more senders buy."""

from __future__ import annotations

import math

import pytest

from streams.planning import (
    count_region,
    format_duration,
    plan_notification,
    suggestions,
)
from streams.senders import Sender, SenderPool, SenderStatus, SenderType, parse_pool

US = frozenset({"US"})


def short(i: int = 0, rate: float = 100.0) -> Sender:
    return Sender(f"8765{i}", SenderType.SHORT_CODE, rate, US)


def test_one_short_code_takes_recipients_over_its_rate() -> None:
    plan = plan_notification({"US": 100_000}, SenderPool([short()]))
    assert plan.seconds == pytest.approx(1000.0)
    assert plan.bottleneck == "sender 87650 (short_code)"


def test_recipients_split_evenly_so_the_slowest_sender_sets_the_pace() -> None:
    long_code = Sender("+14155550100", SenderType.LONG_CODE, 1.0, US)
    plan = plan_notification({"US": 1000}, SenderPool([short(), long_code]))
    loads = {load.sender.id: load for load in plan.loads}
    assert loads["87650"].recipients == loads["+14155550100"].recipients == 500
    assert plan.seconds == pytest.approx(500.0)
    assert "+14155550100" in plan.bottleneck
    by_type = plan.by_type()
    assert by_type[SenderType.LONG_CODE] == (1, 500.0, pytest.approx(500.0))
    assert by_type[SenderType.SHORT_CODE] == (1, 500.0, pytest.approx(5.0))


def test_adding_a_short_code_halves_the_time() -> None:
    whatifs = suggestions({"US": 246_000}, SenderPool([short()]))
    first = whatifs[0]
    assert first.change == "+1 short code at 100/s"
    assert first.before == pytest.approx(2460.0)
    assert first.after == pytest.approx(1230.0)
    assert first.describe() == "+1 short code at 100/s: 41m -> 20m"


def test_retiring_a_slow_sender_is_suggested_when_it_holds_the_others_back() -> None:
    long_code = Sender("+14155550100", SenderType.LONG_CODE, 1.0, US)
    whatifs = suggestions({"US": 1000}, SenderPool([short(), long_code]))
    retire = [w for w in whatifs if w.change.startswith("without long code")]
    assert retire and retire[0].after == pytest.approx(10.0)


def test_segments_count_against_per_segment_rates_only() -> None:
    per_message = Sender("87651", SenderType.SHORT_CODE, 100.0, US, per_segment=False)
    assert plan_notification({"US": 1000}, SenderPool([short()]), segments=2).seconds == 20
    assert plan_notification({"US": 1000}, SenderPool([per_message]), segments=2).seconds == 10


def test_the_api_client_limit_is_a_second_wall() -> None:
    pool = SenderPool([short()])
    plan = plan_notification({"US": 3000}, pool, client_requests_per_minute=300)
    assert plan.client_seconds == pytest.approx(600.0)
    assert plan.seconds == pytest.approx(600.0)
    assert "API limit" in plan.bottleneck
    more = suggestions({"US": 3000}, pool, client_requests_per_minute=300)
    dispatcher = [w for w in more if "dispatcher" in w.change]
    assert dispatcher and dispatcher[0].after == pytest.approx(300.0)


def test_countries_without_an_active_sender_are_unserved() -> None:
    pending = Sender(
        "87652", SenderType.SHORT_CODE, 100.0, frozenset({"CA"}), status=SenderStatus.PENDING
    )
    plan = plan_notification({"US": 100, "CA": 50, "GB": 7}, SenderPool([short(), pending]))
    assert plan.unserved == {"CA": 50, "GB": 7}
    assert plan.seconds == pytest.approx(1.0)


def test_a_daily_cap_pushes_the_rest_to_the_next_day() -> None:
    capped = Sender("+14155550100", SenderType.TEN_DLC, 10.0, US, daily_cap=2000)
    plan = plan_notification({"US": 5000}, SenderPool([capped]))
    (load,) = plan.loads
    assert load.over_daily_cap
    assert plan.seconds == pytest.approx(2 * 86_400 + 100.0)


def test_nothing_to_send_takes_no_time() -> None:
    plan = plan_notification({"US": 0}, SenderPool([short()]))
    assert plan.seconds == 0 and plan.bottleneck == "nothing to send"
    assert suggestions({"US": 0}, SenderPool([short()])) == []


def test_the_configured_pool_parses_into_a_plan() -> None:
    pool = parse_pool('[{"id": "87654", "type": "short_code", "rate": 100, "countries": ["US"]}]')
    out = plan_notification({"US": 500}, pool, share=0.97).to_json()
    assert out["senders"][0]["seconds"] == pytest.approx(5.2, abs=0.05)
    assert out["by_type"]["short_code"]["senders"] == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.2, "1m"),  # rounded up: 60 s
        (61, "1m01s"),
        (2460, "41m"),
        (3900, "1h05m"),
        (28 * 3600, "1d04h"),
        (math.inf, "never"),
    ],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def customer(cid: str, phone: str, regions: list[str], consent: bool = True) -> dict[str, object]:
    return {"customer_id": cid, "phone": phone, "regions": regions, "sms_consent": consent}


def test_a_region_counts_the_latest_record_per_customer_and_each_number_once() -> None:
    records = [
        ("C1", customer("C1", "+12125550001", ["NORTH"])),
        ("C2", customer("C2", "+12125550002", ["NORTH"], consent=False)),
        ("C3", customer("C3", "+14165550003", ["NORTH", "EAST"])),  # Canada
        ("C4", customer("C4", "+442079460123", ["NORTH"])),  # a London landline
        ("C5", customer("C5", "+12125550001", ["NORTH"], consent=False)),  # shares C1's number
        ("C6", customer("C6", "+12125550006", ["SOUTH"])),
        ("C7", customer("C7", "+12125550007", ["NORTH"])),
        ("C7", None),  # deleted
        ("C2", customer("C2", "+12125550002", ["NORTH"], consent=False)),
    ]
    count = count_region(records, "NORTH")
    assert count.customers == 5
    assert dict(count.recipients) == {"US": 1, "CA": 1}
    assert count.no_consent == 1
    assert count.not_textable == 1
    assert count.total == 2
