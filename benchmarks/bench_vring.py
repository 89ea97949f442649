"""Virtqueue chain walking: chains per second, compiled walker vs the Python reference.

Run: ``.venv/bin/python -m pytest benchmarks/bench_vring.py --benchmark-columns=mean,ops``

A split ring of 256 entries is filled with as many chains as it holds, of three
descriptors (a 16-byte header, a 4 KiB data buffer, a 1-byte status: a
virtio-blk request's shape), directly or through one indirect table; a round
pops every chain (each checked: RAM, ROM, order, lengths) and, for the
compiled walker, completes it and publishes the used ring.  The reference
(:mod:`vmforge.virtio.reference`) walks with the same rules in plain Python
and publishes nothing, so the comparison flatters it.
``extra_info.chains_per_s`` is the figure.
"""

from __future__ import annotations

import pytest

from vmforge._fast.vring import VRing
from vmforge.memory import GuestMemory
from vmforge.testing.virtio_driver import GuestAllocator, SplitQueueDriver
from vmforge.virtio.reference import ReferenceWalker

RAM = 0x8000_0000
SIZE = 256


def ring(indirect: bool) -> tuple[GuestMemory, SplitQueueDriver]:
    mem = GuestMemory()
    mem.add_ram(RAM, 8 << 20)
    drv = SplitQueueDriver(mem, GuestAllocator(RAM, 8 << 20), SIZE, event_idx=True,
                           indirect=indirect)
    per = 1 if indirect else 3
    hdr, data, status = RAM + (1 << 20), RAM + (2 << 20), RAM + (3 << 20)
    for k in range(SIZE // per):  # as many chains as the ring holds
        drv.add_sgs([(hdr + 16 * k, 16)], [(data, 4096), (status + k, 1)])
    return mem, drv


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
@pytest.mark.parametrize("kind", ["compiled", "reference"])
def test_chains_per_second(benchmark, rate, kind, indirect) -> None:
    mem, drv = ring(indirect)
    count = drv.avail_idx

    if kind == "compiled":
        def run() -> int:
            r = VRing(mem, SIZE, drv.desc, drv.avail, drv.used, event_idx=True,
                      indirect=indirect)
            pop, push = r.pop_count, r.push_id
            n = 0
            while (c := pop()) is not None:
                push(c[0], c[1], 4097)
                n += 1
            r.should_notify()
            return n
    else:
        def run() -> int:
            w = ReferenceWalker(mem, SIZE, drv.desc, drv.avail, drv.used, indirect=indirect)
            n = 0
            while (c := w.pop()) is not None:
                w.complete(c[0])
                n += 1
            return n

    benchmark.group = f"vring pop+complete, {'indirect' if indirect else 'direct'} chains"
    assert benchmark(run) == count
    rate(count, "chains")


def test_chain_objects_and_views(benchmark, rate) -> None:
    """What a back-end pays per chain: a Chain object and its memoryviews."""
    mem, drv = ring(False)
    count = drv.avail_idx

    def run() -> int:
        r = VRing(mem, SIZE, drv.desc, drv.avail, drv.used, event_idx=True)
        n = 0
        while (c := r.pop()) is not None:
            c.writable_views(0, 4096)
            r.push(c, 4097)
            n += 1
        r.flush()
        return n

    benchmark.group = "vring pop with views"
    assert benchmark(run) == count
    rate(count, "chains")
