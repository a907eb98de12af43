"""Table state survives a worker restart (pins Faust's changelog recovery we rely on)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from outage_sms.admin import ensure_topics
from tests.kafka_helpers import TopicReader, WorkerProcess, await_committed, produce
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

A, B = "+14155550101", "+14155550102"


def customer(phone: str) -> bytes:
    return orjson.dumps(
        {"customer_id": "C1", "phone": phone, "regions": ["R1"], "sms_consent": True}
    )


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_phone_change_after_restart_retracts_the_number_known_before_it(
    settings: Settings, tmp_path: Path, read: Callable[[Role], TopicReader], store: str
) -> None:
    # memory:// must rebuild from the changelog; rocksdb:// reopens its files (the default).
    s = settings.model_copy(update={"store": store})
    await ensure_topics(s)
    topic = TopicRegistry(s)[Role.CUSTOMER_REGIONS].name
    subs = read(Role.SUBSCRIBERS_CHANGELOG)

    bootstrap = s.bootstrap_servers or ""
    reg = TopicRegistry(s)
    inputs = [topic, reg[Role.CUSTOMERS_BY_PHONE].name]

    first = WorkerProcess(s, tmp_path / "worker-1.log").start()
    try:
        await produce(bootstrap, topic, [(b"C1", customer(A))])
        await subs.until(lambda r: set(r.table()) == {A}, what="C1 at A")
        # The inputs must be committed past C1 -> A: the second worker then never sees that
        # record again, and only a table recovered from its changelog knows C1 was at A.
        # (Without this the test would pass by reprocessing, proving nothing.)
        await await_committed(bootstrap, s.faust_id, inputs)
    finally:
        first.stop_cleanly()
    committed = await await_committed(bootstrap, s.faust_id, inputs, timeout=0)
    assert any(t == topic for t, _ in committed), "C1 -> A is behind the committed offset"

    # Produce only once it is ready: records that arrive while a worker recovers its tables
    # can be lost by faust-streaming 0.15.3 (issue notes of 2026-11-24).
    second = WorkerProcess(s, tmp_path / "worker-2.log", env={"OUTAGE_SMS_LOG_LEVEL": "INFO"})
    second.start()
    try:
        await second.log_contains("Worker ready")
        await produce(bootstrap, topic, [(b"C1", customer(B))])
        # Only a worker that recovered customer_id -> A can retract A. The retraction and
        # the upsert are keyed by different numbers (partitions), so await the final state.
        await subs.until(lambda r: set(r.table()) == {B}, what="A retracted, C1 at B")
        retractions = [v for k, v in subs.records if k == orjson.dumps(A) and v is None]
        assert retractions, "A left the table through a tombstone written after the restart"
    finally:
        second.stop_cleanly()
    if store.startswith("rocksdb"):
        assert list((s.data_dir).rglob("customer_phone-*.db")), "RocksDB files were written"
