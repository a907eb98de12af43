"""streams.murmur: the same hash and partition as Kafka's default partitioner (aiokafka's)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.murmur import kafka_partition, murmur2
from topology.views import phone_partition


@settings(max_examples=2_000, deadline=None)
@given(st.binary(max_size=64))
def test_murmur2_is_aiokafkas(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=512))
def test_partition_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), [])
    assert kafka_partition(key, partitions) == expected
    assert phone_partition(key, partitions) == expected


def test_every_tail_length_and_known_values() -> None:
    # Every remainder of the length by 4 takes its own branch; high bytes test the masks.
    for n in range(13):
        for fill in (0x00, 0x7F, 0xFF):
            data = bytes([fill]) * n
            assert murmur2(data) == aiokafka_murmur2(data)
    # Values from Kafka's Java client (UtilsTest.testMurmur2 / the default partitioner).
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
