"""``RefcountBlockCodec.count_used`` (what the metadata-preallocation test counts a
refcount block at a time with) against the entries read one by one."""

from __future__ import annotations

import random

import pytest

from vmforge_qcow2.refcount import RefcountBlockCodec


@pytest.mark.parametrize("order", range(7))
def test_count_used_agrees_with_get(order: int) -> None:
    codec = RefcountBlockCodec(order)
    rng = random.Random(order)
    size = 512
    entries = size * 8 // codec.bits
    for _ in range(50):
        blk = bytearray(size)
        for _ in range(rng.randrange(entries)):   # some entries set, with any byte
            codec.set(blk, rng.randrange(entries), rng.randrange(1, codec.max + 1))
        i0 = rng.randrange(entries)
        i1 = rng.randrange(i0, entries + 1)
        want = sum(codec.get(blk, i) != 0 for i in range(i0, i1))
        assert codec.count_used(blk, i0, i1) == want


@pytest.mark.parametrize("order", range(7))
def test_next_used_and_next_free_agree_with_get(order: int) -> None:
    codec = RefcountBlockCodec(order)
    rng = random.Random(100 + order)
    size = 16384              # long zero stretches: several of next_used's 4 KiB steps
    entries = size * 8 // codec.bits
    for _ in range(40):
        blk = bytearray(size)
        for _ in range(rng.choice((0, 1, 3, 40))):
            codec.set(blk, rng.randrange(entries), rng.randrange(1, codec.max + 1))
        i = rng.randrange(entries)
        n = rng.randrange(i, entries + 1)
        used = next((j for j in range(i, n) if codec.get(blk, j)), n)
        assert codec.next_used(blk, i, n) == used
        free = next((j for j in range(i, entries) if not codec.get(blk, j)), entries)
        assert min(codec.next_free(blk, i, entries), entries) == free


def test_next_used_reads_only_what_it_is_asked() -> None:
    codec = RefcountBlockCodec(4)          # 16-bit entries
    blk = bytearray(8192)
    codec.set(blk, 100, 1)
    assert codec.next_used(blk, 0, 100) == 100     # (not 100's entry: past the range)
    assert codec.next_used(blk, 0, 101) == 100
    assert codec.next_used(blk, 101, 4096) == 4096
