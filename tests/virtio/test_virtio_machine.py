"""A transport on a machine: realize gives the device guest memory and call_soon, the
guest reaches the registers through the address space, worker-thread completions
come back through the machine's call_soon, and the line reaches the controller."""

from __future__ import annotations

import time

from vmforge.machine import Machine
from vmforge.testing.virtio_driver import GuestAllocator, SplitQueueDriver
from vmforge.testing.virtio_kit import EchoDevice
from vmforge.virtio import VirtioMmioTransport, mmio, spec

RAM, SLOT = 0x8000_0000, 0x1000_1000


class Threaded(EchoDevice):
    name = "virtio-echo-machine"

    def on_notify(self, queue):
        for chain in queue.pop_available():
            self.run_in_thread(queue, chain, lambda c: c.write(c.read()[::-1]))


class Board(Machine):
    name = "virtio-test-board"

    def build(self) -> None:
        self.add_ram(RAM, 1 << 20)
        self.slot = VirtioMmioTransport(Threaded())
        self.add_device(self.slot, SLOT)
        self.levels: list[tuple[int, bool]] = []
        self.slot.irq.connect(lambda n, level: self.levels.append((n, level)), 3)


def test_device_on_a_machine():
    m = Board()
    m.build()
    space, dev = m.space, m.slot.dev
    assert dev.memory is space.memory  # realize attached guest memory

    def wr(off, value):
        space.write(SLOT + off, 4, value)

    assert space.read(SLOT + mmio.DEVICE_ID, 4) == Threaded.device_id
    wr(mmio.STATUS, 3)
    wr(mmio.DRIVER_FEATURES_SEL, 1)
    wr(mmio.DRIVER_FEATURES, 1)  # VERSION_1
    wr(mmio.STATUS, 3 | spec.STATUS_FEATURES_OK)
    q = SplitQueueDriver(space.memory, GuestAllocator(RAM, 1 << 20), 16, event_idx=False,
                         indirect=False, notify=lambda: wr(mmio.QUEUE_NOTIFY, 0))
    wr(mmio.QUEUE_NUM, 16)
    for reg, addr in ((mmio.QUEUE_DESC_LOW, q.desc), (mmio.QUEUE_DRIVER_LOW, q.avail),
                      (mmio.QUEUE_DEVICE_LOW, q.used)):
        wr(reg, addr)
    wr(mmio.QUEUE_READY, 1)
    wr(mmio.STATUS, 3 | spec.STATUS_FEATURES_OK | spec.STATUS_DRIVER_OK)
    req = q.add_sgs([b"machine"], [7])
    q.kick()
    deadline = time.monotonic() + 10
    while q.used_idx == 0 and time.monotonic() < deadline:
        m.run_pending_calls()  # what the run loop does between CPU slices
        time.sleep(0.001)
    assert q.get_buf() is req and req.data() == b"enihcam"
    assert m.levels == [(3, True)]
    assert space.read(SLOT + mmio.INTERRUPT_STATUS, 4) == mmio.INT_VRING
    wr(mmio.INTERRUPT_ACK, mmio.INT_VRING)
    assert m.levels[-1] == (3, False)
    m.reset()
    assert space.read(SLOT + mmio.STATUS, 4) == 0
    m.slot.unrealize()
