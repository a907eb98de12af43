"""AuditDraft writes the bytes AuditRecord would, without validating on the hot path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import AuditDraft, AuditRecord

CASES: list[dict[str, Any]] = [
    {
        "audit_id": "inbound:m1:opt_out",
        "decision": "opt_out",
        "at": "2026-11-24T15:00:00Z",
        "facts": {},
    },
    {
        "audit_id": "inbound:m2:status_answer",
        "decision": "status_answer",
        "at": "2026-11-24T15:00:00.250000Z",
        "reason": None,
        "phone": "+14155550123",
        "message_id": "m2",
        "facts": {
            "sender": "87654",
            "outages": [["O1", 3], ["O2", 1]],
            "eta": None,
            "chars": 12,
            "known_customer": True,
            "words": "arrêtez ça 🙂",
        },
    },
    {
        "audit_id": "x",
        "decision": "suppressed",
        "reason": "opted_out",
        "outage_id": "O9",
        "outage_version": 2**63 - 1,
        "command_id": "rep-00",
        "at": "2026-01-01T00:00:00Z",
        "facts": {"nested": {"a": [1, 2.5, "\u0000"]}},
    },
]


@pytest.mark.parametrize("fields", CASES)
def test_a_draft_writes_the_same_bytes_as_the_validated_model(fields: dict[str, Any]) -> None:
    draft = AuditDraft(**fields)
    assert draft.to_bytes() == AuditRecord.model_validate(fields).to_bytes()
    assert AuditRecord.from_bytes(draft.to_bytes()) == AuditRecord.model_validate(fields)


def test_a_draft_reads_back_as_the_model_with_every_field() -> None:
    draft = AuditDraft(**CASES[1])
    assert orjson.loads(draft.to_bytes())["facts"]["outages"] == [["O1", 3], ["O2", 1]]
    assert AuditRecord.from_bytes(draft.to_bytes()).message_id == "m2"
