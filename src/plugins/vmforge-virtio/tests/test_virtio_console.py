"""virtio-console: guest output to the back-end, host input with flow control, the
emergency write, and the conformance suite."""

from __future__ import annotations

from vmforge.chardev import BufferChar
from vmforge.testing.virtio_kit import guest_memory, make
from vmforge.testing.virtio_suite import VirtioConformance
from vmforge.virtio import mmio
from vmforge_virtio import VirtioConsole
from vmforge_virtio.console import RX, TX


def console():
    chardev = BufferChar()
    dev = VirtioConsole(chardev)
    _dev, t, drv, queues = make(guest_memory(), device=dev)
    return chardev, dev, t, drv, queues


def test_guest_output_reaches_the_back_end():
    chardev, dev, _t, _drv, queues = console()
    for text in (b"hello ", b"hvc0\n"):
        queues[TX].add_sgs([text], [])
        queues[TX].kick()
    assert chardev.output == b"hello hvc0\n"
    assert len(queues[TX].drain()) == 2 and dev.statistics()["tx_bytes"] == 11


def test_input_waits_for_receive_buffers():
    chardev, dev, t, _drv, queues = console()
    chardev.feed(b"typed before any buffer")
    assert chardev.pending_input == 23  # kept, not lost
    r1 = queues[RX].add_sgs([], [8])
    queues[RX].kick()
    assert queues[RX].get_buf() is r1 and r1.data() == b"typed be"
    r2 = queues[RX].add_sgs([], [64])
    queues[RX].kick()
    assert queues[RX].get_buf() is r2 and r2.data() == b"fore any buffer"
    assert chardev.pending_input == 0 and t.irq.level
    r3 = queues[RX].add_sgs([], [64])
    queues[RX].kick()
    chardev.feed(b"ls\n")  # a buffer is waiting: delivered at once
    assert queues[RX].get_buf() is r3 and r3.data() == b"ls\n"
    assert dev.statistics()["rx_bytes"] == 26


def test_emergency_write():
    chardev, _dev, t, _drv, _queues = console()
    t.write(mmio.CONFIG + 8, 4, ord("!"))
    assert chardev.output == b"!"


class TestConsoleConformance(VirtioConformance):
    sample_queue = TX
    eager_queues = (TX,)  # receive buffers are popped when input arrives

    def make_device(self):
        return VirtioConsole(BufferChar())

    def sample_buffer(self, queue_index):
        return [b"conformance\n"], []
