"""virtio-rng: buffers filled with random bytes, in every ring layout; the conformance suite."""

from __future__ import annotations

import pytest

from vmforge.testing.virtio_kit import ALL_RING_MODES, guest_memory, make
from vmforge.testing.virtio_suite import VirtioConformance
from vmforge_virtio import VirtioRng


@pytest.mark.parametrize("mode", sorted(ALL_RING_MODES))
def test_fills_buffers(mode):
    kw = dict(ALL_RING_MODES[mode])
    dev = VirtioRng(packed=kw.pop("packed", False))
    _dev, t, _drv, (q,) = make(guest_memory(), device=dev, **kw)
    reqs = [q.add_sgs([], [n]) for n in (1, 16, 64, 4096)]
    q.kick()
    done = q.drain()
    assert done == reqs and t.irq.level
    assert [len(r.data()) for r in done] == [1, 16, 64, 4096]
    assert len({r.data() for r in done[1:]}) == 3 and done[3].data() != bytes(4096)
    assert dev.statistics()["bytes_written"] == 1 + 16 + 64 + 4096


def test_large_buffer_is_capped(monkeypatch):
    dev = VirtioRng(max_bytes=100)
    _dev, _t, _drv, (q,) = make(guest_memory(), device=dev)
    req = q.add_sgs([], [1000])
    q.kick()
    assert q.get_buf() is req and req.written == 100


def test_readable_only_buffer_gets_nothing():
    dev = VirtioRng()
    _dev, _t, _drv, (q,) = make(guest_memory(), device=dev)
    req = q.add_sgs([b"abc"], [])
    q.kick()
    assert q.get_buf() is req and req.written == 0 and not dev.broken


class TestRngConformance(VirtioConformance):
    def make_device(self):
        return VirtioRng()
