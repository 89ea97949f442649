"""Hostile drivers: every broken ring ends in virtio_error (DEVICE_NEEDS_RESET, config
interrupt, a message naming device, queue and descriptor), never an exception, and the
device works again after a reset."""

from __future__ import annotations

import logging

import pytest

from vmforge.testing.virtio_driver import F_INDIRECT, F_NEXT, F_WRITE, GuestAllocator, MmioDriver
from vmforge.testing.virtio_kit import RAM, RAM_SIZE, ROM, EchoDevice, make
from vmforge.virtio import VirtioMmioTransport, mmio, spec

BUF = RAM + 0x20_0000  # a scratch buffer well inside RAM


def kick(drv, index=0):
    drv.wr(mmio.QUEUE_NOTIFY, index)


def assert_broken(dev, t, drv, text, desc=None):
    assert dev.broken and dev.last_error is not None
    assert text in dev.last_error, dev.last_error
    assert dev.last_error.startswith("virtio-echo-test: queue 0")
    if desc is not None:
        assert f"descriptor {desc}:" in dev.last_error
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    assert drv.rd(mmio.INTERRUPT_STATUS) & mmio.INT_CONFIG and t.irq.level
    assert dev.statistics()["errors"] >= 1


def assert_recovers(memory, dev, t, drv):
    """After a reset the same device serves a clean ring again."""
    drv.alloc = GuestAllocator(RAM + 0x30_0000, 0x10_0000)
    q = drv.setup()[0]
    assert not dev.broken and not drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    req = q.add_sgs([b"abc"], [3])
    q.kick()
    assert q.get_buf() is req and req.data() == b"cba"


@pytest.fixture
def split(memory, alloc):
    dev, t, drv, qs = make(memory, alloc)
    return memory, dev, t, drv, qs[0]


@pytest.fixture
def packed(memory, alloc):
    dev, t, drv, qs = make(memory, alloc, packed=True)
    return memory, dev, t, drv, qs[0]


SPLIT_CASES = {
    # name: (descriptors [(index, addr, len, flags, next)], head, expected text, descriptor)
    "loop": ([(0, BUF, 8, F_NEXT, 1), (1, BUF, 8, F_NEXT, 0)], 0, "longer than its table", None),
    "self-loop": ([(3, BUF, 8, F_NEXT, 3)], 3, "longer than its table", None),
    "next-out-of-range": ([(0, BUF, 8, F_NEXT, 16)], 0, "next index out of range", 0),
    "zero-length": ([(0, BUF, 0, 0, 0)], 0, "zero-length buffer", 0),
    "readable-after-writable": ([(0, BUF, 8, F_WRITE | F_NEXT, 1), (1, BUF, 8, 0, 0)], 0,
                                "device-readable descriptor after a device-writable", 1),
    "outside-ram": ([(0, 0x4000, 8, 0, 0)], 0, "buffer outside RAM", 0),
    "runs-off-ram": ([(0, RAM + RAM_SIZE - 4, 8, 0, 0)], 0, "buffer outside RAM", 0),
    "wraps-2-64": ([(0, (1 << 64) - 8, 16, 0, 0)], 0, "wraps past 2**64", 0),
    "writable-rom": ([(0, ROM, 8, F_WRITE, 0)], 0, "read-only memory", 0),
    "indirect-with-next": ([(0, BUF, 32, F_INDIRECT | F_NEXT, 1)], 0, "NEXT flag", 0),
    "indirect-size-24": ([(0, BUF, 24, F_INDIRECT, 0)], 0, "multiple of 16", 0),
    "indirect-size-0": ([(0, BUF, 0, F_INDIRECT, 0)], 0, "multiple of 16", 0),
    "indirect-outside-ram": ([(0, 0x5000, 32, F_INDIRECT, 0)], 0, "indirect table outside", 0),
    "head-out-of-range": ([], 40, "head index out of range", 40),
}


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_split_hostile_chain(split, case, caplog):
    memory, dev, t, drv, q = split
    descs, head, text, desc = SPLIT_CASES[case]
    for i, addr, length, flags, nxt in descs:
        q.write_desc(i, addr, length, flags, nxt)
    q.publish(head)
    with caplog.at_level(logging.WARNING, "vmforge.virtio"):
        kick(drv)
    assert_broken(dev, t, drv, text, desc)
    assert dev.seen == []  # the back-end never saw the chain
    assert any("virtio-echo-test: queue 0" in r.getMessage() for r in caplog.records)
    kick(drv)  # a broken device ignores kicks
    assert dev.statistics()["errors"] == 1
    assert_recovers(memory, dev, t, drv)


def test_indirect_table_loop_nested_and_next(split):
    memory, dev, t, drv, q = split
    table = RAM + 0x10_0000
    q.write_desc(0, BUF, 8, F_NEXT, 1, table=table)
    q.write_desc(1, BUF, 8, F_NEXT, 0, table=table)  # loops inside the table
    q.write_desc(0, table, 32, F_INDIRECT)
    q.publish(0)
    kick(drv)
    assert_broken(dev, t, drv, "longer than its table")
    for entries, text in (([(0, table + 64, 16, F_INDIRECT, 0)], "inside an indirect table"),
                          ([(0, BUF, 8, F_NEXT, 5)], "next index out of range")):
        assert_recovers(memory, dev, t, drv)
        q = drv.queues[0]
        t2 = RAM + 0x38_0000
        for i, addr, length, flags, nxt in entries:
            q.write_desc(i, addr, length, flags, nxt, table=t2)
        q.write_desc(0, t2, 32, F_INDIRECT)
        q.publish(0)
        kick(drv)
        assert_broken(dev, t, drv, text)


def test_indirect_without_the_feature(memory, alloc):
    dev, t, drv, qs = make(memory, alloc, accept=~(1 << spec.VIRTIO_F_INDIRECT_DESC))
    q = qs[0]
    q.write_desc(0, BUF, 16, F_INDIRECT)
    q.publish(0)
    kick(drv)
    assert_broken(dev, t, drv, "without VIRTIO_F_INDIRECT_DESC")


def test_misaligned_indirect_table_is_read_correctly(split):
    """The spec asks no alignment of indirect tables: a table at an odd address works."""
    memory, dev, _t, drv, q = split
    table = RAM + 0x10_0003
    memory.write(BUF, b"payload!")
    q.write_desc(0, BUF, 8, F_NEXT, 1, table=table)
    q.write_desc(1, BUF + 0x100, 8, F_WRITE, 0, table=table)
    q.write_desc(0, table, 32, F_INDIRECT)
    q.publish(0)
    kick(drv)
    assert not dev.broken
    assert memory.read(BUF + 0x100, 8) == b"!daolyap"


def test_total_length_over_4g(split):
    """1024 segments of the whole 4 MiB RAM total 2**32 bytes: refused."""
    _memory, dev, t, drv, q = split
    table = RAM + 0x10_0000
    for i in range(1024):
        q.write_desc(i, RAM, RAM_SIZE, F_NEXT if i < 1023 else 0, i + 1 if i < 1023 else 0,
                     table=table)
    q.write_desc(0, table, 16 * 1024, F_INDIRECT)
    q.publish(0)
    kick(drv)
    assert_broken(dev, t, drv, "2**32 bytes or more")


def test_too_many_segments(split):
    _memory, dev, t, drv, q = split
    table = RAM + 0x10_0000
    n = dev.max_segments + 1
    for i in range(n):
        q.write_desc(i, BUF, 1, F_NEXT if i < n - 1 else 0, i + 1 if i < n - 1 else 0,
                     table=table)
    q.write_desc(0, table, 16 * n, F_INDIRECT)
    q.publish(0)
    kick(drv)
    assert_broken(dev, t, drv, "more segments than the device accepts")


def test_avail_idx_jumps_past_queue_size(split):
    _memory, dev, t, drv, q = split
    q.write_desc(0, BUF, 8, 0)
    q.set_avail_idx(17)  # queue size 16
    kick(drv)
    assert_broken(dev, t, drv, "avail.idx moved more than the queue size")


class HoldingDevice:
    """Makes the echo device keep chains in flight instead of completing them."""

    @staticmethod
    def install(dev):
        held = []

        def on_notify(queue):
            held.extend(queue.pop_available())

        dev.on_notify = on_notify
        return held


def test_head_republished_while_in_flight(split):
    _memory, dev, t, drv, q = split
    held = HoldingDevice.install(dev)
    q.write_desc(2, BUF, 8, 0)
    q.publish(2)
    kick(drv)
    assert len(held) == 1 and not dev.broken
    q.publish(2)  # the same head again, still in flight
    kick(drv)
    assert_broken(dev, t, drv, "head is already in flight", 2)


def test_more_in_flight_than_queue_size(split):
    _memory, dev, t, drv, q = split
    held = HoldingDevice.install(dev)
    for i in range(16):
        q.write_desc(i, BUF, 8, 0)
        q.publish(i)
    kick(drv)
    assert len(held) == 16 and not dev.broken
    q.publish(0)
    kick(drv)
    assert_broken(dev, t, drv, "more buffers in flight than the queue size")


@pytest.mark.parametrize("where", ["desc", "avail", "used-rom", "misaligned"])
def test_queue_placed_outside_ram(memory, alloc, where):
    dev = EchoDevice()
    t = VirtioMmioTransport(dev)
    drv = MmioDriver(t, memory, alloc)
    assert drv.negotiate()
    areas = {"desc": (0x1000, BUF, BUF + 0x1000), "avail": (BUF, 0x7000_0000, BUF + 0x1000),
             "used-rom": (BUF, BUF + 0x1000, ROM), "misaligned": (BUF + 8, BUF + 0x1000,
                                                                 BUF + 0x2000)}[where]
    drv.wr(mmio.QUEUE_SEL, 0)
    drv.wr(mmio.QUEUE_NUM, 16)
    for reg, addr in zip((mmio.QUEUE_DESC_LOW, mmio.QUEUE_DRIVER_LOW, mmio.QUEUE_DEVICE_LOW),
                         areas, strict=True):
        drv.wr(reg, addr)
    drv.wr(mmio.QUEUE_READY, 1)
    assert dev.broken and "cannot enable" in dev.last_error
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    drv.driver_ok()
    kick(drv)  # nothing happens, nothing raises


def test_queue_size_not_a_power_of_two(memory, alloc):
    dev, _t, _drv, _qs = make(memory, alloc, size=12)
    assert dev.broken and "power of 2" in dev.last_error


def test_driver_that_never_consumes_used_entries(split):
    """The device keeps serving; nothing grows without bound on the host side."""
    memory, dev, _t, drv, q = split
    memory.write(BUF, b"x" * 8)
    for _ in range(2000):
        q.write_desc(0, BUF, 8, F_NEXT, 1)
        q.write_desc(1, BUF + 64, 8, F_WRITE, 0)
        q.publish(0)
        kick(drv)
        assert not dev.broken, dev.last_error
    assert q.used_idx == 2000 & 0xFFFF
    assert dev.statistics()["inflight"] == 0 and len(dev.seen) == 2000


def test_back_end_exception_is_a_device_error(split):
    _memory, dev, _t, drv, q = split

    def boom(queue):
        raise KeyError("bug in the back-end")

    dev.on_notify = boom
    q.add_sgs([b"a"], [1])
    kick(drv)  # does not raise
    assert dev.broken and "internal error: KeyError" in dev.last_error


PACKED_CASES = {
    "ring-loop": "longer than its table",
    "id-busy": "buffer id is already in flight",
    "indirect-next": "NEXT flag",
    "zero-length": "zero-length buffer",
    "outside-ram": "buffer outside RAM",
}


@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_packed_hostile(packed, case):
    memory, dev, t, drv, q = packed
    avail = q.avail_flags()
    if case == "ring-loop":  # every descriptor says NEXT: the chain runs round the ring
        for i in range(q.size):
            q.write_desc(i, BUF, 8, 0, F_NEXT | avail)
    elif case == "id-busy":
        held = HoldingDevice.install(dev)
        q.write_desc(0, BUF, 8, 5, avail)
        q.write_desc(1, BUF, 8, 5, avail)
        kick(drv)
        assert len(held) == 1
    elif case == "indirect-next":
        q.write_desc(0, BUF, 32, 0, F_INDIRECT | F_NEXT | avail)
    elif case == "zero-length":
        q.write_desc(0, BUF, 0, 0, avail)
    else:
        q.write_desc(0, 0x2000, 8, 0, avail)
    kick(drv)
    assert_broken(dev, t, drv, PACKED_CASES[case])
    vars(dev).pop("on_notify", None)  # back to the echo back-end
    assert_recovers(memory, dev, t, drv)
