"""virtio-console (virtio 1.2 section 5.3), one port: Linux's ``hvc0``.

``virtio-serial-device`` with a :class:`~vmforge.chardev.CharBackend`
(``VirtioConsole(chardev=BufferChar())``): queue 0 receives (host input into
the driver's buffers), queue 1 transmits (guest output to the back-end).
No MULTIPORT, so no control queues; the config space says one port and, with
VIRTIO_CONSOLE_F_EMERG_WRITE, a write to ``emerg_wr`` prints one character.

Input uses the chardev's flow control: ``can_receive`` is the room of the
receive buffer the device holds, and new receive buffers from the driver call
``accept_input`` so queued input flows on.  Everything runs on the machine's
thread (the device sets the back-end's ``dispatch`` to ``call_soon``).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from vmforge.chardev import CharBackend, NullChar
from vmforge.virtio import Chain, VirtioDevice, Virtqueue, spec

__all__ = ["VirtioConsole"]

VIRTIO_CONSOLE_F_SIZE = 0
VIRTIO_CONSOLE_F_EMERG_WRITE = 2
RX, TX = 0, 1


class VirtioConsole(VirtioDevice):
    """A single-port virtio console on a character back-end."""

    name: ClassVar[str] = "virtio-serial-device"
    device_id: ClassVar[int] = spec.VIRTIO_ID_CONSOLE
    queue_sizes: ClassVar[tuple[int, ...]] = (128, 128)

    def __init__(self, chardev: CharBackend | None = None, **props: Any) -> None:
        super().__init__(**props)
        self.chardev: CharBackend = chardev if chardev is not None else NullChar()
        self._rx: Chain | None = None  # the receive buffer being filled
        self.stats.update(rx_bytes=0, tx_bytes=0)
        self.chardev.attach(self)

    def set_chardev(self, chardev: CharBackend | None) -> None:
        """Put the port on another back-end (QEMU's ``-device virtconsole,chardev=``)."""
        self.chardev = chardev if chardev is not None else NullChar()
        self.chardev.attach(self)
        if self._call_soon is not None and self.chardev.dispatch is None:
            self.chardev.dispatch = self._call_soon

    def attach(self, memory: Any, call_soon: Any = None) -> None:
        super().attach(memory, call_soon)
        if call_soon is not None and self.chardev.dispatch is None:
            self.chardev.dispatch = call_soon

    def device_features_bits(self) -> int:
        return 1 << VIRTIO_CONSOLE_F_EMERG_WRITE

    def config_bytes(self) -> bytes:
        """``cols``, ``rows`` (not offered: 0), ``max_nr_ports`` 1, ``emerg_wr``."""
        return struct.pack("<HHII", 0, 0, 1, 0)

    def write_config(self, offset: int, data: bytes) -> None:
        if offset == 8 and self.has_feature(VIRTIO_CONSOLE_F_EMERG_WRITE):
            self.chardev.write(data[:1])
            self.stats["tx_bytes"] += 1

    # -- guest output -------------------------------------------------------------------

    def on_notify(self, queue: Virtqueue) -> None:
        if queue.index == TX:
            for chain in queue.pop_available():
                data = chain.read()
                self.chardev.write(data)
                self.stats["requests"] += 1
                self.stats["tx_bytes"] += len(data)
                queue.push_used(chain, 0)
            queue.notify_guest()
        else:  # new receive buffers: let queued input flow
            self.chardev.accept_input()

    def activate(self) -> None:
        self.chardev.accept_input()

    # -- host input (the CharFrontend protocol) -------------------------------------------

    def can_receive(self) -> int:
        if not self.driver_ok or not self.queues[RX].enabled:
            return 0
        if self._rx is None or self.queues[RX].inflight.get(self._rx.head) is not self._rx:
            self._rx = self.queues[RX].pop()
        return self._rx.writable_len if self._rx is not None else 0

    def receive(self, data: bytes) -> None:
        chain, q = self._rx, self.queues[RX]
        if chain is None or not data:
            return
        self._rx = None
        n = chain.write(data[:chain.writable_len])
        self.stats["rx_bytes"] += n
        q.push_used(chain, n)
        q.notify_guest()

    def reset_device(self) -> None:
        self._rx = None

    def restart(self, queue: Virtqueue, chain: Chain) -> None:
        """A receive buffer held when the state was saved is held again."""
        if queue.index == RX and self._rx is None:
            self._rx = chain
            self.chardev.accept_input()
        else:
            queue.push_used(chain, 0)

    def unrealize(self) -> None:
        self.chardev.detach()
        super().unrealize()
