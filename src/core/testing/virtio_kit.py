"""Pieces for testing virtio devices without a guest: guest memory with a ROM, an
echo device, and :func:`make` (device + transport + initialised driver).

The conformance suite (:mod:`vmforge.testing.virtio_suite`) and the core's
tests build on these; device authors can too.
"""

from __future__ import annotations

from typing import Any

from vmforge.memory import GuestMemory
from vmforge.testing.virtio_driver import GuestAllocator, MmioDriver
from vmforge.virtio import VirtioDevice, VirtioMmioTransport, spec

__all__ = ["ALL_RING_MODES", "RAM", "RAM_SIZE", "ROM", "EchoDevice", "guest_memory", "make"]

RAM = 0x8000_0000
RAM_SIZE = 4 << 20
ROM = 0x1000_0000


class EchoDevice(VirtioDevice):
    """Writes the readable bytes of each chain back, reversed, into its writable part."""

    name = "virtio-echo-test"
    device_id = 0x7E
    queue_sizes = (16, 8)

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        self.seen: list[list[tuple[int, int, bool]]] = []
        self.cfg = bytearray(b"ECHO\x01\x02\x03\x04")

    def device_features_bits(self) -> int:
        return 1 << 0

    def config_bytes(self) -> bytes:
        return bytes(self.cfg)

    def write_config(self, offset: int, data: bytes) -> None:
        self.cfg[offset:offset + len(data)] = data

    def on_notify(self, queue: Any) -> None:
        for chain in queue.pop_available():
            self.seen.append(chain.segments())
            data = chain.read()[::-1][:chain.writable_len]
            n = chain.write(data) if data else 0
            self.stats["requests"] += 1
            queue.push_used(chain, n)
        queue.notify_guest()


def guest_memory() -> GuestMemory:
    """``RAM_SIZE`` bytes of RAM at ``RAM`` and a 64 KiB ROM at ``ROM``."""
    mem = GuestMemory()
    mem.add_ram(RAM, RAM_SIZE)
    mem.add_ram(ROM, 0x10000, "rom", readonly=True)
    return mem


def make(memory: GuestMemory, alloc: GuestAllocator | None = None, *, device: Any = None,
         legacy: bool = False, accept: int | None = None, size: int | None = None,
         call_soon: Any = None, **props: Any) -> tuple[Any, VirtioMmioTransport, MmioDriver,
                                                      list[Any]]:
    """``(device, transport, driver, queue drivers)``: ``device`` (default an
    :class:`EchoDevice` with ``props``) in a transport, initialised by the driver."""
    dev = device if device is not None else EchoDevice(**props)
    t = VirtioMmioTransport(dev, legacy=legacy)
    drv = MmioDriver(t, memory, alloc or GuestAllocator(RAM, RAM_SIZE), call_soon=call_soon)
    queues = drv.setup(accept=accept, size=size)
    return dev, t, drv, queues


ALL_RING_MODES = {
    "split": {},
    "split-noevent-noindirect": {"accept": ~((1 << spec.VIRTIO_F_EVENT_IDX)
                                             | (1 << spec.VIRTIO_F_INDIRECT_DESC))},
    "packed": {"packed": True},
    "packed-noevent": {"packed": True, "accept": ~(1 << spec.VIRTIO_F_EVENT_IDX)},
    "legacy": {"legacy": True},
}
