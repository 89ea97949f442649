"""virtio devices for vmforge: one module per device, each usable in any virtio
transport (``vmforge.virtio.mmio`` today).

- :mod:`vmforge_virtio.blk`: ``virtio-blk-device`` (:class:`VirtioBlk`)
- :mod:`vmforge_virtio.rng`: ``virtio-rng-device`` (:class:`VirtioRng`)
- :mod:`vmforge_virtio.console`: ``virtio-serial-device`` (:class:`VirtioConsole`)
"""

from vmforge_virtio.blk import VirtioBlk
from vmforge_virtio.console import VirtioConsole
from vmforge_virtio.rng import VirtioRng

__all__ = ["VirtioBlk", "VirtioConsole", "VirtioRng"]
