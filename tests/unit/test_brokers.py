"""The embedded Kafka's cluster id never looks like an option to Kafka's StorageTool."""

from __future__ import annotations

import uuid

import pytest

from outage_sms import brokers


def test_a_cluster_id_starting_with_a_dash_is_drawn_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(brokers.uuid, "uuid4", lambda: next(draws))
    assert brokers._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_cluster_ids_are_22_url_safe_characters() -> None:
    for _ in range(500):
        cid = brokers._cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
