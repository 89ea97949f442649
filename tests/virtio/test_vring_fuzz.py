"""Fuzzing the chain walker: thousands of random split and packed rings (seeded, bounded
in time) through the compiled walker and the Python reference, which must agree on
every chain and every error; nothing crashes, hangs or reads outside RAM."""

from __future__ import annotations

import random
import time

import pytest

from vmforge._fast.vring import RingError, VRing
from vmforge.memory import GuestMemory
from vmforge.virtio.reference import ReferenceRingError, ReferenceWalker

RAM = 0x1000_0000
RAM_SIZE = 0x10000
ROM = RAM + RAM_SIZE  # adjacent read-only region: segments may cross into it
ROM_SIZE = 0x1000
RINGS = 4000
TIME_BUDGET = 25.0  # seconds per layout, a bound on a slow machine


def _memory() -> GuestMemory:
    mem = GuestMemory()
    mem.add_ram(RAM, RAM_SIZE)
    mem.add_ram(ROM, ROM_SIZE, "rom", readonly=True)
    return mem


def _addr(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.75:
        return RAM + rng.randrange(0x4000, RAM_SIZE)
    if pick < 0.82:
        return ROM + rng.randrange(ROM_SIZE)
    if pick < 0.88:
        return RAM + RAM_SIZE - rng.randrange(1, 64)
    if pick < 0.94:
        return (1 << 64) - rng.randrange(1, 4096)
    return rng.randrange(1 << 64)


def _len(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.8:
        return rng.randrange(1, 512)
    if pick < 0.88:
        return 0
    if pick < 0.95:
        return rng.randrange(1, 0x20000)
    return rng.randrange(1 << 32)


def _flags(rng: random.Random, packed: bool) -> int:
    flags = 0
    if rng.random() < 0.55:
        flags |= 1  # NEXT
    if rng.random() < 0.4:
        flags |= 2  # WRITE
    if rng.random() < 0.12:
        flags |= 4  # INDIRECT
    if packed:
        flags |= rng.choice((0x80, 0x80, 0x80, 0x8000, 0x8080, 0))
    return flags


def _table(rng: random.Random, mem: GuestMemory, base: int, count: int, size: int,
           packed: bool) -> None:
    if rng.random() < 0.2:  # pure noise
        mem.write(base, rng.randbytes(16 * count))
        return
    raw = bytearray()
    for _ in range(count):
        flags = _flags(rng, packed)
        addr, length = _addr(rng), _len(rng)
        if flags & 4 and rng.random() < 0.7:  # an indirect table somewhere plausible
            addr = RAM + 0x8000 + 16 * rng.randrange(0, 0x100) + rng.choice((0, 0, 0, 8, 3))
            if rng.random() < 0.1:
                addr = rng.choice((0x1000, RAM + RAM_SIZE - 8, (1 << 64) - 16))
            length = 16 * rng.randrange(0, 12) + rng.choice((0, 0, 0, 0, 8))
        other = rng.randrange(size + 2) if rng.random() < 0.95 else rng.randrange(65536)
        pair = (other, flags) if packed else (flags, other)
        raw += addr.to_bytes(8, "little") + length.to_bytes(4, "little")
        raw += pair[0].to_bytes(2, "little") + pair[1].to_bytes(2, "little")
    mem.write(base, bytes(raw))


def _outcome(fn):
    try:
        return ("ok", fn())
    except (RingError, ReferenceRingError) as exc:
        return ("error", exc.code)


def _one_ring(rng: random.Random, mem: GuestMemory, packed: bool) -> int:
    size = rng.randrange(1, 65) if packed else 1 << rng.randrange(0, 7)
    desc, driver, device = RAM, RAM + 0x1000, RAM + 0x2000
    mem.write(RAM, bytes(0x4000 + 0x1000))  # rings and indirect tables start clean
    _table(rng, mem, desc, size, size, packed)
    _table(rng, mem, RAM + 0x8000, 0x100, 0x100, packed)  # candidate indirect tables
    if not packed:
        avail_idx = rng.randrange(0, size + 1) if rng.random() < 0.9 else rng.randrange(65536)
        heads = [rng.randrange(size + 1) if rng.random() < 0.9 else rng.randrange(65536)
                 for _ in range(size)]
        mem.write_u16(driver + 2, avail_idx)
        for k, h in enumerate(heads):
            mem.write_u16(driver + 4 + 2 * k, h)
    indirect = rng.random() < 0.8
    maxseg = rng.choice((1024, 4, 64))
    ring = VRing(mem, size, desc, driver, device, packed=packed, indirect=indirect,
                 max_segments=maxseg)
    ref = ReferenceWalker(mem, size, desc, driver, device, packed=packed, indirect=indirect,
                          max_segments=maxseg)
    chains = 0
    for _ in range(size + 2):
        ours = _outcome(ring.pop)
        theirs = _outcome(ref.pop)
        if ours[0] == "ok" and ours[1] is not None:
            chain = ours[1]
            ours = ("ok", (chain.head, chain.slots, chain.segments()))
        assert ours == theirs, (packed, size, ours, theirs)
        if ours[0] == "error" or ours[1] is None:
            break
        chains += 1
        head, slots, segs = ours[1]
        if rng.random() < 0.5:  # complete it, writing somewhere inside its writable part
            writable = sum(n for _a, n, w in segs if w)
            ring.push_id(head, slots, rng.randrange(writable + 1) if writable else 0)
            ref.complete(head)
    ring.should_notify()
    return chains


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_random_rings_compiled_equals_reference(packed):
    rng = random.Random(0x5EED + packed)
    mem = _memory()
    before = bytes(mem.read(ROM, ROM_SIZE))
    start = time.monotonic()
    done = chains = 0
    while done < RINGS and time.monotonic() - start < TIME_BUDGET:
        chains += _one_ring(rng, mem, packed)
        done += 1
    assert done >= 500, f"only {done} rings in {TIME_BUDGET} s"
    assert chains > done // 10  # the generator makes valid chains too, not only garbage
    assert mem.read(ROM, ROM_SIZE) == before  # nothing written into the ROM
