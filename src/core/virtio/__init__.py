"""virtio: devices, virtqueues and transports (``mmio`` now, ``pci`` later).

- :mod:`vmforge.virtio.device`: :class:`VirtioDevice`, the base of every device
  (features, status, config space, statistics, errors, state, I/O threads).
- :mod:`vmforge.virtio.queue`: :class:`Virtqueue` over the compiled ring walker
  (:mod:`vmforge._fast.vring`): chains of ``(address, length, writable)``
  segments and zero-copy views of guest memory.
- :mod:`vmforge.virtio.mmio`: :class:`VirtioMmioTransport`, the virtio-mmio
  window (section 4.2, modern and legacy); with no device it answers as an
  empty slot, as QEMU's board slots do.
- :mod:`vmforge.virtio.reference`: the same chain walk in plain Python, the
  reference the tests and the benchmark compare against.
- :mod:`vmforge.virtio.spec`: the specification's numbers.

Guest-side tools for tests: :mod:`vmforge.testing.virtio_driver` and the
conformance suite :mod:`vmforge.testing.virtio_suite`.
"""

from vmforge.virtio.device import StateError, VirtioDevice
from vmforge.virtio.mmio import VirtioMmioBackend, VirtioMmioTransport
from vmforge.virtio.queue import Chain, ChainError, RingError, Virtqueue

__all__ = ["Chain", "ChainError", "RingError", "StateError", "VirtioDevice",
           "VirtioMmioBackend", "VirtioMmioTransport", "Virtqueue"]
