"""virtio-net with the guest-side driver on an in-memory back-end: the config space,
transmit in every layout, receive with and without mergeable buffers, flow
control both ways, the link, hostile chains, state, and the conformance suite."""

from __future__ import annotations

import copy
import struct

import pytest

from vmforge.net import BufferNet
from vmforge.net.backend import Frame
from vmforge.testing.virtio_kit import ALL_RING_MODES, guest_memory, make
from vmforge.testing.virtio_suite import VirtioConformance
from vmforge.virtio import VirtioMmioTransport, mmio, spec
from vmforge_virtio import net
from vmforge_virtio.net import RX, TX, VirtioNet

MAC = "52:54:00:aa:bb:01"
NO_MRG = ~(1 << net.VIRTIO_NET_F_MRG_RXBUF)


def frame(n: int, seed: int = 0) -> bytes:
    """An Ethernet-looking frame of ``n`` bytes, different for each seed."""
    return bytes((i * 13 + seed * 7 + 1) & 0xFF for i in range(n))


def nic(mode: str = "split", accept: int | None = None, backend=None, **props):
    kw = dict(ALL_RING_MODES[mode])
    if kw.pop("packed", False):
        props["packed"] = True
    if accept is not None:
        kw["accept"] = kw.get("accept", -1) & accept
    backend = backend if backend is not None else BufferNet("n0")
    dev = VirtioNet(backend, mac=props.pop("mac", MAC), **props)
    _dev, t, drv, queues = make(guest_memory(), device=dev, **kw)
    return dev, backend, t, drv, queues


def header(data: bytes, size: int = 12) -> tuple[int, ...]:
    return struct.unpack("<BBHHHHH", data[:12]) if size == 12 else struct.unpack(
        "<BBHHHH", data[:10])


def test_config_space_and_features():
    dev, _b, _t, drv, _q = nic()
    assert drv.config_bytes(0, 6) == bytes.fromhex("525400aabb01")
    assert drv.config(6, 2) == net.VIRTIO_NET_S_LINK_UP
    assert drv.config(8, 2) == 1  # max_virtqueue_pairs
    offered = drv.device_features()
    for bit in (net.VIRTIO_NET_F_MAC, net.VIRTIO_NET_F_STATUS, net.VIRTIO_NET_F_MRG_RXBUF):
        assert offered >> bit & 1
    for bit in (net.VIRTIO_NET_F_CSUM, net.VIRTIO_NET_F_GUEST_CSUM, net.VIRTIO_NET_F_CTRL_VQ):
        assert not offered >> bit & 1  # not offered: nothing could honour them end to end
    assert dev.header_len == 12 and dev.mergeable
    dev.unrealize()


def test_default_macs_follow_qemu_series():
    a, b = VirtioNet(), VirtioNet()
    try:
        assert a.macaddr[:5] == b.macaddr[:5] == bytes.fromhex("5254001234")
        assert a.macaddr != b.macaddr and 0x56 <= a.macaddr[5] and 0x56 <= b.macaddr[5]
    finally:
        first = a.macaddr
        a.unrealize()
        b.unrealize()
    again = VirtioNet()
    assert again.macaddr <= first  # a released address is free again
    again.unrealize()


@pytest.mark.parametrize("bad", ["01:00:5e:00:00:01", "52:54:00:12:34", "zz:54:00:12:34:56"])
def test_bad_mac_is_refused(bad):
    from vmforge.device import DeviceError
    with pytest.raises(DeviceError, match="mac="):
        VirtioNet(mac=bad)


@pytest.mark.parametrize("mode", sorted(ALL_RING_MODES))
def test_transmit_in_every_layout(mode):
    dev, backend, t, _drv, queues = nic(mode)
    hdr = bytes(dev.header_len)
    f1, f2, f3 = frame(60, 1), frame(1514, 2), frame(300, 3)
    queues[TX].add_sgs([hdr, f1], [])                       # header apart
    queues[TX].add_sgs([hdr + f2], [])                      # header and frame together
    queues[TX].add_sgs([hdr[:5], hdr[5:] + f3[:7], f3[7:100], f3[100:]], [])  # scattered
    queues[TX].kick()
    assert backend.sent == [f1, f2, f3]
    assert len(queues[TX].drain()) == 3 and t.irq.level
    stats = dev.statistics()
    assert stats["tx_frames"] == 3 and stats["tx_bytes"] == 60 + 1514 + 300
    assert backend.statistics()["tx_frames"] == 3
    dev.unrealize()


@pytest.mark.parametrize("mode", sorted(ALL_RING_MODES))
def test_receive_one_buffer_per_frame(mode):
    dev, backend, _t, _drv, queues = nic(mode, accept=NO_MRG)
    hdr_len = 10 if mode == "legacy" else 12  # legacy without MRG_RXBUF: no num_buffers
    assert dev.header_len == hdr_len
    reqs = [queues[RX].add_sgs([], [1526]) for _ in range(2)]
    queues[RX].kick()
    backend.inject(frame(100, 1))
    backend.inject(frame(1514, 2))
    done = queues[RX].drain()
    assert done == reqs
    for req, f in zip(done, (frame(100, 1), frame(1514, 2)), strict=True):
        data = req.data()
        assert req.written == hdr_len + len(f) and data[hdr_len:] == f
        fields = header(data, hdr_len)
        assert fields[:6] == (0, 0, 0, 0, 0, 0)  # no offloads: no flags, GSO_NONE
        if hdr_len == 12:
            assert fields[6] == 1  # num_buffers
    assert dev.statistics()["rx_frames"] == 2
    dev.unrealize()


def collect(queue, count_hint=None):
    """(header, frame) of the next frame on a mergeable receive queue."""
    first = queue.get_buf()
    assert first is not None
    data = first.data()
    num = struct.unpack_from("<H", data, 10)[0]
    parts = [first] + [queue.get_buf() for _ in range(num - 1)]
    assert None not in parts
    return header(data), b"".join(p.data() for p in parts)[12:], parts


@pytest.mark.parametrize("mode", ["split", "packed", "legacy"])
def test_mergeable_buffers_span_a_frame(mode):
    dev, backend, _t, _drv, queues = nic(mode)
    assert dev.mergeable
    bufs = [queues[RX].add_sgs([], [100]) for _ in range(8)]
    queues[RX].kick()
    big, small = frame(250, 1), frame(40, 2)
    backend.inject(big)      # 12 + 250 bytes: 100 + 100 + 62
    backend.inject(small)    # 12 + 40: one buffer
    hdr, data, parts = collect(queues[RX])
    assert hdr[6] == 3 and data == big and parts == bufs[:3]
    assert [p.written for p in parts] == [100, 100, 62]
    hdr, data, parts = collect(queues[RX])
    assert hdr[6] == 1 and data == small and parts == [bufs[3]]
    stats = dev.statistics()
    assert stats["rx_buffers"] == 4 and stats["rx_frames"] == 2
    dev.unrealize()


def test_frames_wait_for_receive_buffers_then_flow():
    dev, backend, _t, _drv, queues = nic()
    frames = [frame(64 + i, i) for i in range(5)]
    for f in frames:
        backend.inject(f)
    assert backend.pending_rx == 5 and queues[RX].get_buf() is None  # kept, not lost
    assert dev.statistics()["rx_waits"] >= 1
    queues[RX].add_sgs([], [2048])
    queues[RX].add_sgs([], [2048])
    queues[RX].kick()
    got = [collect(queues[RX])[1] for _ in range(2)]
    assert got == frames[:2] and backend.pending_rx == 3
    for _ in range(3):
        queues[RX].add_sgs([], [2048])
    queues[RX].kick()
    got = [collect(queues[RX])[1] for _ in range(3)]
    assert got == frames[2:] and backend.pending_rx == 0
    assert backend.statistics()["rx_frames"] == 5


def test_mergeable_frame_waits_until_enough_buffers():
    dev, backend, _t, _drv, queues = nic()
    queues[RX].add_sgs([], [200])
    queues[RX].add_sgs([], [200])
    queues[RX].kick()
    big = frame(1000, 5)
    backend.inject(big)  # 1012 bytes do not fit in 400
    assert queues[RX].get_buf() is None and backend.pending_rx == 1
    assert dev.statistics()["rx_buffers_held"] == 2  # popped, kept for this frame
    for _ in range(4):
        queues[RX].add_sgs([], [200])
    queues[RX].kick()
    hdr, data, parts = collect(queues[RX])
    assert hdr[6] == 6 and data == big and [p.written for p in parts] == [200] * 5 + [12]
    assert backend.pending_rx == 0 and dev.statistics()["rx_buffers_held"] == 0


def test_frame_larger_than_a_single_buffer_is_dropped_without_mrg():
    dev, backend, _t, _drv, queues = nic(accept=NO_MRG)
    req = queues[RX].add_sgs([], [200])
    queues[RX].kick()
    backend.inject(frame(500, 1))  # too large: dropped, as QEMU does
    backend.inject(frame(100, 2))  # the same buffer takes the next one
    assert queues[RX].drain() == [req] and req.data()[12:] == frame(100, 2)
    assert dev.statistics()["rx_dropped"] == 1 and backend.pending_rx == 0


class SlowNet(BufferNet):
    """A back-end whose output queue is full until the test says otherwise."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.full = True

    def _tx_pending(self) -> int:
        return self.tx_queue_bytes if self.full else 0

    def drain(self) -> None:
        self.full = False
        self._tx_drained()


def test_transmit_waits_while_the_back_end_is_full():
    backend = SlowNet()
    dev, _b, _t, _drv, queues = nic(backend=backend)
    hdr = bytes(12)
    for i in range(3):
        queues[TX].add_sgs([hdr + frame(80, i)], [])
    queues[TX].kick()
    assert backend.sent == [] and queues[TX].get_buf() is None  # the chains stay the guest's
    backend.drain()  # send_ready: the device takes them
    assert backend.sent == [frame(80, i) for i in range(3)]
    assert len(queues[TX].drain()) == 3
    dev.unrealize()


def test_transmit_burst_yields_and_continues():
    backend = BufferNet()
    dev, _b, _t, _drv, queues = nic(backend=backend, tx_burst=2)
    for i in range(5):
        queues[TX].add_sgs([bytes(12) + frame(70, i)], [])
    queues[TX].kick()  # no machine: call_soon runs the rest at once
    assert backend.sent == [frame(70, i) for i in range(5)]
    dev.unrealize()


def test_link_down_drops_both_ways_and_tells_the_driver():
    dev, backend, t, drv, queues = nic()
    drv.ack_interrupts()
    dev.set_link(False)
    assert drv.config(6, 2) == 0 and drv.rd(mmio.INTERRUPT_STATUS) & mmio.INT_CONFIG
    queues[RX].add_sgs([], [2048])
    queues[RX].kick()
    backend.inject(frame(60))
    queues[TX].add_sgs([bytes(12) + frame(60)], [])
    queues[TX].kick()
    assert backend.sent == [] and queues[RX].get_buf() is None
    stats = dev.statistics()
    assert stats["rx_dropped"] == 1 and stats["tx_dropped"] == 1
    dev.set_link(True)
    backend.inject(frame(61))
    assert collect(queues[RX])[1] == frame(61) and drv.config(6, 2) == 1
    assert t.irq.level
    dev.unrealize()


def test_legacy_driver_sets_the_mac_through_config():
    dev, _b, t, _drv, _q = nic("legacy")
    for i, byte in enumerate(bytes.fromhex("020000000042")):
        t.write(mmio.CONFIG + i, 1, byte)
    assert dev.macaddr == bytes.fromhex("020000000042")
    dev.unrealize()
    modern, _b, t2, _drv, _q = nic()
    t2.write(mmio.CONFIG, 1, 0x02)  # a modern driver cannot
    assert modern.macaddr == bytes.fromhex("525400aabb01")
    modern.unrealize()


def test_transmit_chain_shorter_than_the_header_is_a_device_error():
    dev, backend, _t, drv, queues = nic()
    queues[TX].add_sgs([bytes(8)], [])
    queues[TX].kick()
    assert dev.broken and "shorter than the 12-byte header" in dev.last_error
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET and backend.sent == []
    drv.setup()  # a reset brings it back
    assert not dev.broken
    dev.unrealize()


@pytest.mark.parametrize("shape", [([], [6]), ([b"readable only"], [])])
def test_receive_buffer_without_room_for_the_header_is_a_device_error(shape):
    dev, backend, _t, drv, queues = nic()
    queues[RX].add_sgs(*shape)
    queues[RX].kick()
    backend.inject(frame(60))
    assert dev.broken and "cannot hold the 12-byte header" in dev.last_error
    assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
    assert backend.pending_rx == 1  # the frame waits for a working device
    dev.unrealize()


def test_reset_drops_held_buffers_and_frames_flow_after():
    dev, backend, _t, drv, queues = nic()
    queues[RX].add_sgs([], [100])
    queues[RX].kick()
    backend.inject(frame(500))  # holds the 100-byte buffer, waits for more
    assert dev.statistics()["rx_buffers_held"] == 1
    queues = drv.setup()  # reset and initialise again
    assert dev.statistics()["rx_buffers_held"] == 0
    queues[RX].add_sgs([], [1024])
    queues[RX].kick()
    assert collect(queues[RX])[1] == frame(500)
    dev.unrealize()


def test_state_round_trip_keeps_held_receive_buffers():
    dev, backend, t, drv, queues = nic()
    queues[RX].add_sgs([], [100])
    queues[RX].kick()
    backend.inject(frame(300))  # the buffer is held (in flight), the frame waits
    record = copy.deepcopy(t.save_state())
    assert record["device"]["device"] == {"version": 1, "mac": "525400aabb01", "link_up": True}
    dev.unrealize()
    backend2 = BufferNet("again")
    other = VirtioNet(backend2, mac="52:54:00:aa:bb:02")
    t2 = VirtioMmioTransport(other)
    other.attach(drv.memory)
    t2.load_state(record)
    assert other.macaddr == bytes.fromhex("525400aabb01")
    assert other.statistics()["rx_buffers_held"] == 1  # restart() took it back
    queues[RX].add_sgs([], [400])
    t2.write(mmio.QUEUE_NOTIFY, 4, RX)
    backend2.inject(frame(300))
    first = queues[RX].get_buf()
    assert first is not None and first.written == 100
    second = queues[RX].get_buf()
    assert second is not None and (first.data() + second.data())[12:] == frame(300)
    other.unrealize()


def test_nic_without_back_end_drops_guest_frames():
    dev = VirtioNet(mac=MAC)
    _dev, _t, _drv, queues = make(guest_memory(), device=dev)
    queues[TX].add_sgs([bytes(12) + frame(60)], [])
    queues[TX].kick()
    assert len(queues[TX].drain()) == 1 and dev.statistics()["tx_dropped"] == 1
    dev.unrealize()


def test_a_back_end_has_one_nic():
    from vmforge.device import DeviceError
    backend = BufferNet()
    first = VirtioNet(backend)
    with pytest.raises(DeviceError, match="already in use"):
        VirtioNet(backend)
    first.unrealize()
    second = VirtioNet(backend)  # free again
    assert backend.frontend is second
    second.unrealize()


class _Sink(BufferNet):
    def _send(self, frame: Frame, length: int) -> bool:
        return True


class TestNetConformance(VirtioConformance):
    sample_queue = TX
    eager_queues = (TX,)  # receive buffers are popped when a frame arrives

    def make_device(self):
        return VirtioNet(_Sink())

    def sample_buffer(self, queue_index):
        return [bytes(12) + frame(60)], []
