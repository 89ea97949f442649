"""virtio-rng (virtio 1.2 section 5.4): an entropy source fed from the host's kernel.

``virtio-rng-device``: one queue; every device-writable buffer the driver
offers is filled with random bytes from ``os.getrandom`` (``os.urandom``
where that is missing).  The smallest complete virtio device: the template of
``docs/writing-a-virtio-device.md``.
"""

from __future__ import annotations

import os
from typing import ClassVar

from vmforge.device import Prop
from vmforge.virtio import VirtioDevice, Virtqueue, spec

__all__ = ["VirtioRng"]


def _random_bytes(n: int) -> bytes:
    getrandom = getattr(os, "getrandom", None)
    if getrandom is None:
        return os.urandom(n)
    out = b""
    while len(out) < n:  # getrandom may return fewer bytes than asked
        out += getrandom(n - len(out))
    return out


class VirtioRng(VirtioDevice):
    """An entropy source."""

    name: ClassVar[str] = "virtio-rng-device"
    device_id: ClassVar[int] = spec.VIRTIO_ID_RNG
    queue_sizes: ClassVar[tuple[int, ...]] = (256,)

    max_bytes = Prop(int, 1 << 16, "most bytes given for one buffer")

    def on_notify(self, queue: Virtqueue) -> None:
        for chain in queue.pop_available():  # bounded, every chain checked
            n = min(chain.writable_len, self.max_bytes)
            written = chain.write(_random_bytes(n)) if n else 0
            self.stats["requests"] += 1
            self.stats["bytes_written"] += written
            queue.push_used(chain, written)
        queue.notify_guest()  # one interrupt decision for the batch

    def restart(self, queue: Virtqueue, chain) -> None:  # type: ignore[no-untyped-def]
        n = min(chain.writable_len, self.max_bytes)
        queue.push_used(chain, chain.write(_random_bytes(n)) if n else 0)
