"""Kafka's default partitioner hash (murmur2, as Java's ``Utils.murmur2``), faster.

aiokafka's ``murmur2`` is pure Python, byte by byte, masking after every step: about 7
microseconds for a 12-byte phone number here, paid for every number the replay reads and
every text the replies agent checks for its home partition. This is the same function
with the 4-byte words read in one ``struct`` call and the masks only where a value can
pass 32 bits. ``tests/unit/test_murmur.py`` pins it against aiokafka's over random keys.
"""

from __future__ import annotations

from struct import Struct

__all__ = ["kafka_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C
_WORDS: dict[int, Struct] = {}


def murmur2(data: bytes) -> int:
    """The unsigned 32-bit murmur2 of ``data``; ``aiokafka.partitioner.murmur2``'s value."""
    length = len(data)
    h = _SEED ^ length
    n = length >> 2
    if n:
        words = _WORDS.get(n)
        if words is None:
            words = _WORDS[n] = Struct(f"<{n}I")
        for k in words.unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and aiokafka's) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
