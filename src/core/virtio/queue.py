"""One virtqueue of a virtio device: its configuration and the ring behind it.

:class:`Virtqueue` holds what the transport configures (size, the three area
addresses, ready) and, once enabled, a :class:`vmforge._fast.vring.VRing` that
walks the driver's chains in C.  What a back-end sees::

    def on_notify(self, queue):
        for chain in queue.pop_available():      # bounded, every chain checked
            n = chain.write(os.urandom(chain.writable_len))
            queue.push_used(chain, n)
        queue.notify_guest()                     # one interrupt for the batch

A chain that breaks the ring protocol never reaches the back-end: the queue
calls the device's :meth:`~vmforge.virtio.device.VirtioDevice.virtio_error`
(the device goes to DEVICE_NEEDS_RESET) and pops nothing more until reset.

Threads: every method runs on the machine's thread; I/O threads hand their
completions back with :meth:`VirtioDevice.run_in_thread` (or ``call_soon``).
"""

from __future__ import annotations

from vmforge._fast.vring import Chain, ChainError, RingError, VRing
from vmforge.virtio import spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from vmforge.virtio.device import VirtioDevice

__all__ = ["Chain", "ChainError", "RingError", "Virtqueue"]

_U16 = 0xFFFF


class Virtqueue:
    """A virtqueue as the driver configured it, and its ring once enabled.

    ``desc``/``driver``/``device`` are the descriptor, driver and device area
    addresses (the split ring's table, available and used rings).  For the
    legacy transport, ``pfn``/``align`` place the ring (``legacy_layout``).
    """

    def __init__(self, owner: VirtioDevice, index: int, max_size: int) -> None:
        self.owner = owner
        self.index = index
        self.max_size = max_size
        self.size = max_size
        self.ready = False
        self.desc = 0
        self.driver = 0
        self.device = 0
        self.pfn = 0  # legacy transport
        self.align = 4096
        self.ring: VRing | None = None
        #: chains popped and not yet pushed, by head (split) or buffer id (packed)
        self.inflight: dict[int, Chain] = {}
        #: bumped when the queue is reset: completions of older requests are dropped
        self.generation = 0
        #: used buffers pushed since the last notify_guest (none: no interrupt)
        self._unsignalled = False

    def __repr__(self) -> str:
        return (f"Virtqueue({self.owner.name}#{self.index}, size={self.size}, "
                f"ready={self.ready}, inflight={len(self.inflight)})")

    # -- configuration (the transport) ---------------------------------------------------

    def clear(self) -> None:
        """Back to the reset state (QueueReset, device reset)."""
        self.ready = False
        self.ring = None
        self.size = self.max_size
        self.desc = self.driver = self.device = 0
        self.pfn = 0
        self.align = 4096
        self.inflight.clear()
        self.generation += 1

    def clear_ready(self) -> None:
        """QueueReady written 0: the ring stops; its configuration stays."""
        self.ready = False
        self.ring = None
        self.inflight.clear()
        self.generation += 1

    def enable(self) -> bool:
        """The driver made the queue live: build the ring (False, and a virtio_error,
        when its size or placement is wrong)."""
        owner = self.owner
        self.ready = True
        if owner.memory is None:
            return True  # no guest memory attached (a register-only back-end)
        features = owner.driver_features
        try:
            if not 1 <= self.size <= self.max_size:
                raise ValueError(f"size {self.size} is not in 1..{self.max_size}")
            self.ring = VRing(owner.memory, self.size, self.desc, self.driver, self.device,
                              packed=bool(features >> spec.VIRTIO_F_RING_PACKED & 1),
                              event_idx=bool(features >> spec.VIRTIO_F_EVENT_IDX & 1),
                              indirect=bool(features >> spec.VIRTIO_F_INDIRECT_DESC & 1),
                              max_segments=owner.max_segments)
        except ValueError as exc:
            self.ring = None
            owner.virtio_error(f"cannot enable: {exc}", queue=self)
            return False
        self.inflight.clear()
        return True

    def legacy_layout(self, page_size: int) -> None:
        """Place a legacy ring from QueuePFN, QueueAlign and GuestPageSize."""
        base = self.pfn * page_size
        self.desc, self.driver, self.device = spec.legacy_ring_layout(base, self.size,
                                                                       self.align)

    @property
    def enabled(self) -> bool:
        return self.ring is not None

    # -- the available side ------------------------------------------------------------

    def pop(self) -> Chain | None:
        """The next available chain, or None (nothing there, device broken, or the
        driver broke the protocol: then the device is in NEEDS_RESET)."""
        ring = self.ring
        if ring is None or self.owner.broken:
            return None
        try:
            chain = ring.pop()
        except RingError as exc:
            self.owner.virtio_error(exc.text, queue=self, desc=exc.desc)
            return None
        if chain is not None:
            self.inflight[chain.head] = chain
        return chain

    def pop_available(self, limit: int | None = None) -> Iterator[Chain]:
        """Pop chains until none is left, at most ``limit`` (default: the queue size,
        so a driver that keeps adding cannot hold the machine's thread)."""
        budget = self.size if limit is None else limit
        while budget > 0:
            chain = self.pop()
            if chain is None:
                return
            budget -= 1
            yield chain

    def has_available(self) -> bool:
        return self.ring is not None and not self.owner.broken and self.ring.has_available()

    def set_notification(self, enable: bool) -> None:
        """Ask for the driver's kicks (True) or suppress them while polling (False)."""
        if self.ring is not None:
            self.ring.set_notification(enable)

    # -- the used side -----------------------------------------------------------------

    def push_used(self, chain: Chain, written: int) -> None:
        """Give ``chain`` back with ``written`` bytes written into its writable part
        (visible to the driver at :meth:`notify_guest` / :meth:`flush`)."""
        ring = self.ring
        head, room = chain.head, chain.writable_len
        if ring is None or self.inflight.get(head) is not chain:
            return  # the queue was reset since the chain was popped
        written = max(0, min(int(written), room))
        del self.inflight[head]
        ring.push(chain, written)
        self._unsignalled = True

    def flush(self) -> None:
        if self.ring is not None:
            self.ring.flush()

    def notify_guest(self) -> bool:
        """Publish what was pushed and interrupt the driver if it wants to hear;
        True when an interrupt was raised.  Nothing pushed since the last call:
        no interrupt (QEMU's devices notify only after completing a request; an
        interrupt with nothing new is spurious to a level-triggered driver)."""
        ring = self.ring
        if ring is None or not self._unsignalled:
            return False
        self._unsignalled = False
        if ring.should_notify() or self._empty_and_asked():
            self.owner.signal_used(self)
            return True
        return False

    def _empty_and_asked(self) -> bool:
        """NOTIFY_ON_EMPTY (legacy): an interrupt when the device has run out of
        buffers, whatever the driver's suppression says (QEMU's
        ``virtio_should_notify``)."""
        owner = self.owner
        return (owner.has_feature(spec.VIRTIO_F_NOTIFY_ON_EMPTY) and not self.inflight
                and self.ring is not None and not self.ring.has_available())

    # -- state -----------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        ring = self.ring
        out: dict[str, Any] = {"size": self.size, "ready": self.ready, "desc": self.desc,
                               "driver": self.driver, "device": self.device,
                               "pfn": self.pfn, "align": self.align}
        if ring is not None:
            out["ring"] = {
                "last_avail": ring.last_avail, "used_idx": ring.used_idx,
                "published": ring.published, "signalled_used": ring.signalled_used,
                "signalled_valid": ring.signalled_valid, "avail_wrap": ring.avail_wrap,
                "used_wrap": ring.used_wrap, "notify_enabled": ring.notify_enabled,
                "inflight": [[c.head, c.slots, c.pos, bool(c.wrap)]
                             for c in sorted(self.inflight.values(), key=lambda c: c.head)],
            }
        return out
