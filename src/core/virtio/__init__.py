"""virtio: transports (``mmio`` now, ``pci`` later) and, in later steps, the
device and virtqueue model.

:class:`~vmforge.virtio.mmio.VirtioMmioTransport` is the virtio-mmio window
(virtio 1.2 section 4.2); with no back-end it answers as an empty slot, as
QEMU's board slots do, so a guest probes it and moves on.
"""

from vmforge.virtio.mmio import VirtioMmioBackend, VirtioMmioTransport

__all__ = ["VirtioMmioBackend", "VirtioMmioTransport"]
