"""VirtioDevice through the virtio-mmio transport: features, status, rings of every
layout, notification suppression, config space, reset, statistics, state, threads."""

from __future__ import annotations

import copy
import threading

import pytest

from vmforge.testing.virtio_driver import DeviceLoop, GuestAllocator, MmioDriver
from vmforge.testing.virtio_kit import RAM, EchoDevice, make
from vmforge.virtio import StateError, VirtioMmioTransport, mmio, spec

VERSION_1 = 1 << spec.VIRTIO_F_VERSION_1


def test_every_ring_layout_carries_data(any_ring):
    dev, _t, _drv, queues = any_ring
    for qi, q in enumerate(queues):
        for k in range(3 * q.size):  # several laps of the ring
            out = [bytes([k & 0xFF]) * (k % 7 + 1), b"-%d-" % qi]
            req = q.add_sgs(out, [5, 9], token=k)
            q.kick()
            got = q.get_buf()
            assert got is req and got.token == k
            assert got.data() == b"".join(out)[::-1][:14]
    assert not dev.broken and dev.statistics()["inflight"] == 0
    assert dev.statistics()["requests"] == sum(3 * q.size for q in queues)


def test_batched_requests_one_interrupt_each_batch(any_ring):
    dev, t, drv, queues = any_ring
    q = queues[0]
    reqs = [q.add_sgs([b"%d" % i], [1], indirect=False) for i in range(4)]
    q.kick()
    assert dev.statistics()["interrupts"] == 1 and t.irq.level
    assert [r.token for r in q.drain()] == [r.token for r in reqs]
    assert drv.ack_interrupts() == mmio.INT_VRING and not t.irq.level


def test_features_not_offered_clear_features_ok(memory, alloc):
    dev = EchoDevice()
    drv = MmioDriver(VirtioMmioTransport(dev), memory, alloc)
    drv.wr(mmio.STATUS, 1 | 2)
    drv.write_features(drv.device_features() | 1 << 5)  # bit 5 was not offered
    drv.wr(mmio.STATUS, 1 | 2 | spec.STATUS_FEATURES_OK)
    assert not drv.status & spec.STATUS_FEATURES_OK
    assert drv.negotiate(accept=~VERSION_1) is False  # modern needs VERSION_1
    assert drv.negotiate() is True
    before = dev.driver_features
    drv.write_features(0)  # after FEATURES_OK the features are final
    assert dev.driver_features == before


def test_driver_ok_without_features_ok_is_an_error(memory, alloc):
    dev = EchoDevice()
    drv = MmioDriver(VirtioMmioTransport(dev), memory, alloc)
    drv.wr(mmio.STATUS, 1 | 2 | spec.STATUS_DRIVER_OK)
    assert dev.broken and drv.status & spec.STATUS_DEVICE_NEEDS_RESET


def test_failed_and_needs_reset_bits(echo):
    dev, _t, drv, _queues = echo
    dev.virtio_error("test")
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    drv.wr(mmio.STATUS, drv.status & ~spec.STATUS_DEVICE_NEEDS_RESET)  # the driver cannot clear it
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    drv.wr(mmio.STATUS, drv.status | spec.STATUS_FAILED)
    assert drv.status & spec.STATUS_FAILED
    drv.wr(mmio.STATUS, 0)
    assert drv.status == 0 and not dev.broken


def test_event_idx_suppresses_interrupts_and_kicks(echo):
    dev, _t, drv, queues = echo
    q = queues[0]
    q.add_sgs([b"a"], [1])
    q.kick()
    assert q.get_buf() is not None
    assert dev.statistics()["interrupts"] == 1
    q.set_used_event(q.last_used + 2)  # interrupt me after the third completion from here
    for k in range(3):
        q.add_sgs([b"x"], [1], indirect=False)
        drv.wr(mmio.QUEUE_NOTIFY, 0)
        assert dev.statistics()["interrupts"] == (1 if k < 2 else 2), k
    # the device asks for kicks from its next available index on: the driver sees it
    assert drv.memory.read_u16(q.used + 4 + 8 * q.size) == 4
    q.kicked_idx = q.avail_idx
    q.add_sgs([b"y"], [1])
    assert q.kick_prepare() is True


def test_no_interrupt_flag_without_event_idx(memory, alloc):
    dev, t, _drv, queues = make(memory, alloc, accept=~(1 << spec.VIRTIO_F_EVENT_IDX))
    q = queues[0]
    q.disable_interrupts()
    q.add_sgs([b"a"], [1])
    q.kick()
    assert dev.statistics()["interrupts"] == 0 and not t.irq.level
    assert q.get_buf() is not None  # polled


def test_packed_event_suppression(memory, alloc):
    dev, _t, _drv, queues = make(memory, alloc, packed=True)
    q = queues[0]
    q.disable_interrupts()
    q.add_sgs([b"a"], [1])
    q.kick()
    assert dev.statistics()["interrupts"] == 0
    q.set_used_event(q.next_avail + 1, q.avail_wrap)  # after the second one from here
    q.add_sgs([b"b"], [1])
    q.kick()
    assert dev.statistics()["interrupts"] == 0
    q.add_sgs([b"c"], [1])
    q.kick()
    assert dev.statistics()["interrupts"] == 1
    assert [r.data() for r in q.drain()] == [b"a", b"b", b"c"]


def test_config_space_and_generation(echo):
    dev, t, drv, _queues = echo
    assert drv.config_bytes(0, 4) == b"ECHO" and drv.config(4, 4) == 0x04030201
    t.write(mmio.CONFIG + 1, 1, ord("X"))
    assert drv.config_bytes(0, 4) == b"EXHO"
    assert drv.config(0x40, 4) == 0xFFFFFFFF  # past the config space: all ones, as QEMU
    gen = drv.rd(mmio.CONFIG_GENERATION)
    dev.config_changed()
    assert drv.rd(mmio.CONFIG_GENERATION) == gen + 1
    assert drv.ack_interrupts() == mmio.INT_CONFIG


def test_reset_drops_in_flight_requests(echo):
    dev, _t, drv, queues = echo
    q = queues[0]
    held = []
    dev.on_notify = lambda queue: held.extend(queue.pop_available())
    q.add_sgs([b"a"], [1])
    q.kick()
    assert len(held) == 1 and dev.statistics()["inflight"] == 1
    drv.wr(mmio.STATUS, 0)
    dev.queues[0].push_used(held[0], 1)  # a late completion: dropped, nothing written
    assert q.used_idx == 0 and dev.statistics()["inflight"] == 0


def test_queue_reset_register(echo):
    dev, _t, drv, _queues = echo
    drv.wr(mmio.QUEUE_SEL, 1)
    drv.wr(mmio.QUEUE_RESET, 1)
    assert not dev.queues[1].ready and dev.queues[1].ring is None
    assert drv.rd(mmio.QUEUE_READY) == 0


def test_legacy_transport_registers(memory, alloc):
    dev, _t, drv, queues = make(memory, alloc, legacy=True)
    assert drv.rd(mmio.VERSION) == 1 and dev.legacy
    assert not dev.device_features() & VERSION_1
    drv.wr(mmio.DEVICE_FEATURES_SEL, 1)
    assert drv.rd(mmio.DEVICE_FEATURES) == 0  # legacy: 32 feature bits
    drv.wr(mmio.QUEUE_SEL, 0)
    assert drv.rd(mmio.LEGACY_QUEUE_PFN) == queues[0].desc // 4096
    assert drv.rd(mmio.QUEUE_READY) == 0 and drv.rd(mmio.CONFIG_GENERATION) == 0
    drv.wr(mmio.LEGACY_QUEUE_PFN, 0)
    assert not dev.queues[0].ready
    assert VirtioMmioTransport(EchoDevice(), force_legacy=True).read(mmio.VERSION, 4) == 1


def test_statistics_is_a_dict_of_counts(echo):
    dev, _t, _drv, queues = echo
    queues[0].add_sgs([b"abc"], [3])
    queues[0].kick()
    stats = dev.statistics()
    assert stats["requests"] == 1 and stats["notifies"] == 1 and stats["errors"] == 0
    assert all(isinstance(v, int) for v in stats.values())


# -- state -------------------------------------------------------------------------------

def _held_setup(memory, alloc, **kw):
    dev, t, drv, queues = make(memory, alloc, **kw)
    held = []
    dev.on_notify = lambda queue: held.extend(queue.pop_available())
    q = queues[0]
    q.add_sgs([b"one"], [3])
    q.add_sgs([b"two"], [3])
    q.kick()
    assert len(held) == 2
    dev.queues[0].push_used(held[0], 0)
    dev.queues[0].notify_guest()
    assert q.get_buf() is not None
    return dev, t, drv, q


@pytest.mark.parametrize("kw", [{}, {"packed": True}, {"legacy": True}],
                         ids=["split", "packed", "legacy"])
def test_save_and_load_with_a_request_in_flight(memory, alloc, kw):
    dev, t, drv, q = _held_setup(memory, alloc, **kw)
    record = t.save_state()
    assert record["device"]["queues"][0]["ring"]["inflight"][0][0] == 1
    t2 = VirtioMmioTransport(EchoDevice(**{k: v for k, v in kw.items() if k == "packed"}),
                             legacy=kw.get("legacy", False))
    t2.dev.attach(memory)
    t2.load_state(copy.deepcopy(record))  # the echo back-end restarts... by default: 0 bytes
    assert t2.dev.status == dev.status and t2.dev.driver_features == dev.driver_features
    req = q.get_buf()
    assert req is not None and req.written == 0
    drv.t = t2  # the driver goes on with the restored device
    r = q.add_sgs([b"three"], [5])
    q.kick()
    assert q.get_buf() is r and r.data() == b"eerht"


BAD = {
    "version": lambda r: r["device"].__setitem__("version", 99),
    "name": lambda r: r["device"].__setitem__("name", "virtio-other"),
    "size": lambda r: r["device"]["queues"][0].__setitem__("size", 4096),
    "feature": lambda r: r["device"].__setitem__("driver_features", 1 << 60 | VERSION_1),
    "inflight-head": lambda r: r["device"]["queues"][0]["ring"]["inflight"].append(
        [99, 1, 0, True]),
    "ring-outside-ram": lambda r: r["device"]["queues"][1].__setitem__("desc", 0x1000),
    "not-int": lambda r: r["device"].__setitem__("status", "15"),
    "irq-bits": lambda r: r.__setitem__("interrupt_status", 0x80),
    "queue-count": lambda r: r["device"]["queues"].pop(),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_state_refused_and_nothing_applied(memory, alloc, case):
    _dev, t, _drv, _q = _held_setup(memory, alloc)
    record = copy.deepcopy(t.save_state())
    BAD[case](record)
    target = EchoDevice()
    t2 = VirtioMmioTransport(target)
    target.attach(memory)
    before = copy.deepcopy(t2.save_state())
    with pytest.raises(StateError):
        t2.load_state(record)
    assert t2.save_state() == before


# -- I/O threads -------------------------------------------------------------------------

class ThreadedEcho(EchoDevice):
    name = "virtio-echo-threaded"

    def on_notify(self, queue):
        for chain in queue.pop_available():
            self.run_in_thread(queue, chain, self.work)

    def work(self, chain):
        assert threading.current_thread() is not threading.main_thread()
        return chain.write(chain.read()[::-1][:chain.writable_len])


def test_run_in_thread_completes_on_the_loop(memory):
    loop = DeviceLoop()
    dev, _t, _drv, queues = make(memory, GuestAllocator(RAM, 1 << 20), device=ThreadedEcho(),
                               call_soon=loop.call_soon)
    q = queues[0]
    reqs = [q.add_sgs([b"req%d" % i], [4]) for i in range(10)]
    q.kick()
    assert loop.run_until(lambda: q.used_idx == 10)
    assert [r.data() for r in q.drain()] == [b"%dqer" % i for i in range(10)]
    assert reqs and dev.statistics()["interrupts"] >= 1
    dev.unrealize()
