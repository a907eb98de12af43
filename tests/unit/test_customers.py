"""Re-keying customers by phone: phone changes, shared numbers, deletions."""

from __future__ import annotations

import orjson

from schemas import CustomerRecord
from streams.customers import apply_phone_change, decode_phone_change, rekey_customer

A, B = "+14155550101", "+14155550102"


def cust(cid: str, phone: str, regions: list[str] | None = None) -> CustomerRecord:
    return CustomerRecord(customer_id=cid, phone=phone, regions=regions or ["R1"], sms_consent=True)


def test_new_customer_emits_one_upsert() -> None:
    state, out = rekey_customer(None, "C1", cust("C1", A))
    assert state == A
    assert [(p, decode_phone_change(e)[0]) for p, e in out] == [(A, "C1")]
    assert decode_phone_change(out[0][1])[1]["regions"] == ["R1"]  # type: ignore[index]


def test_phone_change_retracts_the_old_number_first() -> None:
    state, out = rekey_customer(A, "C1", cust("C1", B))
    assert state == B
    assert [p for p, _ in out] == [A, B]
    assert decode_phone_change(out[0][1]) == ("C1", None)


def test_same_phone_update_does_not_retract() -> None:
    _, out = rekey_customer(A, "C1", cust("C1", A, ["R2"]))
    assert [p for p, _ in out] == [A]


def test_tombstone_retracts_and_clears_state() -> None:
    assert rekey_customer(A, "C1", None) == (
        None,
        [(A, orjson.dumps({"customer_id": "C1", "customer": None}))],
    )
    assert rekey_customer(None, "C1", None) == (None, [])


def test_shared_number_keeps_each_account() -> None:
    s = apply_phone_change(None, "C1", {"regions": ["R1"]})
    s = apply_phone_change(s, "C2", {"regions": ["R2"]})
    assert s == {"C1": {"regions": ["R1"]}, "C2": {"regions": ["R2"]}}
    s = apply_phone_change(s, "C1", None)
    assert s == {"C2": {"regions": ["R2"]}}
    assert apply_phone_change(s, "C2", None) is None


def test_apply_does_not_mutate_the_current_state() -> None:
    current = {"C1": {"regions": ["R1"]}}
    apply_phone_change(current, "C1", None)
    assert current == {"C1": {"regions": ["R1"]}}
