"""Two virtio-net devices joined by -netdev socket over 127.0.0.1: frames both ways
between two guest-side drivers, and a burst larger than the receiver's buffers
arriving whole and in order as it gives more."""

from __future__ import annotations

import struct

import pytest

from vmforge.config import NetdevSpec
from vmforge.net import create_netdev
from vmforge.testing.virtio_driver import DeviceLoop
from vmforge.testing.virtio_kit import guest_memory, make
from vmforge_virtio.net import VirtioNet


def frame(n: int, seed: int) -> bytes:
    return bytes((i * 5 + seed * 11) & 0xFF for i in range(n))


class Guest:
    """A NIC, its driver and the loop standing in for the machine's thread."""

    def __init__(self, loop: DeviceLoop, backend, mac: str) -> None:
        self.dev = VirtioNet(backend, mac=mac)
        _d, self.t, self.drv, (self.rx, self.tx) = make(guest_memory(), device=self.dev,
                                                       call_soon=loop.call_soon)
        self.got: list[bytes] = []
        self._parts: list = []

    def give_buffers(self, count: int, size: int = 1536) -> None:
        for _ in range(min(count, len(self.rx.free))):  # as many as the ring has room for
            self.rx.add_sgs([], [size])
        self.rx.kick()

    def send(self, data: bytes) -> None:
        self.tx.add_sgs([bytes(12), data], [])
        self.tx.kick()

    def poll(self) -> int:
        """Collect completed frames (mergeable: num_buffers parts); frames so far."""
        while (req := self.rx.get_buf()) is not None:
            self._parts.append(req)
            first = self._parts[0].data()
            if len(self._parts) == struct.unpack_from("<H", first, 10)[0]:
                self.got.append(b"".join(p.data() for p in self._parts)[12:])
                self._parts = []
        self.tx.drain()
        return len(self.got)


@pytest.fixture
def pair():
    loop = DeviceLoop()
    a_net = create_netdev(NetdevSpec.parse("socket,id=a,listen=127.0.0.1:0"), loop.call_soon)
    b_net = create_netdev(NetdevSpec.parse(f"socket,id=b,connect=127.0.0.1:{a_net.address[1]}"),
                          loop.call_soon)
    a = Guest(loop, a_net, "52:54:00:00:0a:01")
    b = Guest(loop, b_net, "52:54:00:00:0b:01")
    assert loop.run_until(lambda: a_net.connected, 5)
    yield loop, a, b
    for g in (a, b):
        g.dev.unrealize()
    a_net.close()
    b_net.close()


def test_frames_both_ways(pair):
    loop, a, b = pair
    a.give_buffers(8)
    b.give_buffers(8)
    a.send(frame(60, 1))
    a.send(frame(1514, 2))
    b.send(frame(342, 3))
    assert loop.run_until(lambda: b.poll() == 2 and a.poll() == 1, 10)
    assert b.got == [frame(60, 1), frame(1514, 2)] and a.got == [frame(342, 3)]
    assert a.dev.statistics()["tx_frames"] == 2 and b.dev.statistics()["rx_frames"] == 2


def test_burst_waits_for_the_receivers_buffers(pair):
    loop, a, b = pair
    sizes = [60 + (i * 97) % 9000 for i in range(120)]
    b.give_buffers(4, 1024)
    for i, n in enumerate(sizes):
        a.send(frame(n, i))
        if i % 16 == 15:
            loop.run()
    # the receiver fills what it has, the rest waits in its back-end or in TCP
    assert loop.run_until(lambda: b.dev.statistics()["rx_waits"] > 0, 10)
    assert b.poll() < len(sizes)
    assert loop.run_until(lambda: (b.give_buffers(64, 1024), b.poll())[1] == len(sizes), 20)
    assert b.got == [frame(n, i) for i, n in enumerate(sizes)]  # whole, in order
    assert b.dev.statistics()["rx_dropped"] == 0
