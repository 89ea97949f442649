"""virtio-net (virtio 1.2 section 5.1): an Ethernet NIC on a :mod:`vmforge.net` back-end.

``virtio-net-device[,mac=52:54:00:12:34:56][,netdev=ID][,mrg_rxbuf=on]``
``[,rx_queue_size=256][,tx_queue_size=256]``: queue 0 receives, queue 1
transmits; pass the back-end as ``VirtioNet(backend=...)`` (or let the board
resolve ``netdev=ID`` from ``machine.netdevs`` when it realizes the device).
The device never knows which back-end it talks to.

Offered: VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS (LINK_UP, :meth:`VirtioNet.set_link`)
and VIRTIO_NET_F_MRG_RXBUF.  Every frame carries a ``virtio_net_hdr``: 12
bytes with VERSION_1 or MRG_RXBUF (``num_buffers`` last), 10 for a legacy
driver without MRG_RXBUF.  No checksum or segmentation offload is offered
(CSUM, GUEST_CSUM, GSO): none of the back-ends could carry a partial checksum
to the other end, and a guest that computes its own is always correct.

- Transmit: each chain is ``header + frame`` in any layout; the frame goes to
  the back-end as memoryviews of guest RAM (a socket or tap writes them
  directly).  While the back-end's output queue is full the device stops
  taking chains; the back-end's ``send_ready`` resumes it.  A chain shorter
  than the header is a device error (DEVICE_NEEDS_RESET), as in QEMU.
- Receive: the header and the frame are written straight into the driver's
  buffers.  With MRG_RXBUF a frame spans as many buffers as it needs
  (``num_buffers`` says how many), without it one buffer must hold it all (a
  frame too large for it is dropped, as QEMU does).  When the driver has not
  given enough buffers the frame waits in the back-end, which stops reading;
  new buffers (a kick on the receive queue) let it flow.
- Statistics: frames and bytes each way, drops, waits for receive buffers.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from vmforge.device import DeviceError, Prop
from vmforge.net import NetBackend, NetdevError, default_mac, format_mac, parse_mac
from vmforge.net.mac import claim_mac, release_mac
from vmforge.virtio import Chain, StateError, VirtioDevice, Virtqueue, spec

__all__ = ["VirtioNet"]

# feature bits (section 5.1.3)
VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_GUEST_CSUM = 1
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_F_CTRL_VQ = 17

VIRTIO_NET_S_LINK_UP = 1
RX, TX = 0, 1
#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
HEADER = struct.Struct("<BBHHHHH")
LEGACY_HEADER_LEN = 10  # without num_buffers: a legacy driver without MRG_RXBUF
DEVICE_STATE_VERSION = 1


def _queue_size(value: int, what: str) -> int:
    """QEMU's rule for rx/tx_queue_size: a power of 2 in 256..1024."""
    if not 256 <= value <= 1024 or value & (value - 1):
        raise DeviceError(f"virtio-net-device: {what}={value} must be a power of 2 "
                          "in 256..1024")
    return value


class VirtioNet(VirtioDevice):
    """A virtio network card."""

    name: ClassVar[str] = "virtio-net-device"
    device_id: ClassVar[int] = spec.VIRTIO_ID_NET

    mac = Prop(str, "", "MAC address (default: 52:54:00:12:34:56, :57, ... as QEMU)")
    netdev = Prop(str, "", "id of the -netdev back-end (the board resolves it)")
    mrg_rxbuf = Prop(bool, True, "offer VIRTIO_NET_F_MRG_RXBUF")
    rx_queue_size = Prop(int, 256, "size of the receive queue")
    tx_queue_size = Prop(int, 256, "size of the transmit queue")
    tx_burst = Prop(int, 256, "frames sent per turn before others run (QEMU's x-txburst)")

    def __init__(self, backend: NetBackend | None = None, **props: Any) -> None:
        super().__init__(**props)
        _queue_size(self.rx_queue_size, "rx_queue_size")
        _queue_size(self.tx_queue_size, "tx_queue_size")
        if self.tx_burst < 1:
            raise DeviceError(f"{self.name}: tx_burst must be at least 1")
        try:
            if self.mac:
                self.macaddr = parse_mac(self.mac)
                claim_mac(self.macaddr)
            else:
                self.macaddr = default_mac()
        except NetdevError as exc:
            raise DeviceError(f"{self.name}: {exc}") from exc
        self._mac_claimed: bytes | None = self.macaddr
        self.link_up = True
        self.backend: NetBackend | None = None
        self._rx_chains: deque[Chain] = deque()  # receive buffers popped, not yet filled
        self._tx_waiting = False
        self.stats.update(rx_frames=0, rx_bytes=0, rx_dropped=0, rx_waits=0, rx_buffers=0,
                          tx_frames=0, tx_bytes=0, tx_dropped=0)
        if backend is not None:
            self.set_backend(backend)

    # -- the back-end ------------------------------------------------------------------

    def set_backend(self, backend: NetBackend | None) -> None:
        """Plug the cable into ``backend`` (None unplugs it: guest frames are dropped)."""
        if backend is not None and backend.frontend not in (None, self):
            raise DeviceError(f"{self.name}: netdev {backend.id!r} is already in use")
        if self.backend is not None and self.backend.frontend is self:
            self.backend.detach()
        self.backend = backend
        if backend is None:
            return
        if backend.dispatch is None and self._call_soon is not None:
            backend.dispatch = self._call_soon
        backend.attach(self)

    def attach(self, memory: Any, call_soon: Any = None) -> None:
        super().attach(memory, call_soon)
        if call_soon is not None and self.backend is not None and self.backend.dispatch is None:
            self.backend.dispatch = call_soon

    def realize(self, machine: Any) -> None:
        super().realize(machine)
        if self.backend is None and self.netdev:
            netdevs = getattr(machine, "netdevs", None)
            found = netdevs.get(self.netdev) if isinstance(netdevs, Mapping) else None
            if found is None:
                raise DeviceError(f"{self.name}: netdev {self.netdev!r} not found")
            self.set_backend(found)

    def unrealize(self) -> None:
        if self.backend is not None and self.backend.frontend is self:
            self.backend.detach()
        if self._mac_claimed is not None:
            release_mac(self._mac_claimed)
            self._mac_claimed = None
        super().unrealize()

    # -- what the device offers ------------------------------------------------------------

    def queue_max_sizes(self) -> list[int]:
        return [self.rx_queue_size, self.tx_queue_size]

    def device_features_bits(self) -> int:
        bits = 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS
        if self.mrg_rxbuf:
            bits |= 1 << VIRTIO_NET_F_MRG_RXBUF
        return bits

    def config_bytes(self) -> bytes:
        """``mac``, ``status``, ``max_virtqueue_pairs`` (1) of ``struct virtio_net_config``."""
        status = VIRTIO_NET_S_LINK_UP if self.link_up else 0
        return struct.pack("<6sHH", self.macaddr, status, 1)

    def write_config(self, offset: int, data: bytes) -> None:
        # a legacy driver sets the MAC through the config space (as QEMU allows
        # without VERSION_1 and without the control queue)
        if offset < 6 and not self.has_feature(spec.VIRTIO_F_VERSION_1):
            mac = bytearray(self.macaddr)
            end = min(6, offset + len(data))
            mac[offset:end] = data[:end - offset]
            self.macaddr = bytes(mac)

    @property
    def mergeable(self) -> bool:
        return self.has_feature(VIRTIO_NET_F_MRG_RXBUF)

    @property
    def header_len(self) -> int:
        """Bytes of ``virtio_net_hdr`` in front of every frame, as negotiated."""
        if self.mergeable or self.has_feature(spec.VIRTIO_F_VERSION_1):
            return HEADER.size
        return LEGACY_HEADER_LEN

    def set_link(self, up: bool) -> None:
        """Plug (True) or unplug the link: the status changes and the driver hears it;
        frames are dropped both ways while it is down (QEMU's ``set_link``)."""
        if up == self.link_up:
            return
        self.link_up = up
        self.config_changed()
        if up and self.backend is not None:
            self.backend.accept_input()

    # -- the driver ---------------------------------------------------------------------------

    def activate(self) -> None:
        if self.backend is not None:
            self.backend.accept_input()

    def on_notify(self, queue: Virtqueue) -> None:
        if queue.index == TX:
            self._transmit()
        elif self.backend is not None:  # new receive buffers: let waiting frames flow
            self.backend.accept_input()

    def reset_device(self) -> None:
        self._rx_chains.clear()
        self._tx_waiting = False

    def restart(self, queue: Virtqueue, chain: Chain) -> None:
        if queue.index == RX:
            self._rx_chains.append(chain)  # an empty receive buffer, still the driver's
        else:
            queue.push_used(chain, 0)

    # -- transmit ---------------------------------------------------------------------------

    def _transmit(self) -> None:
        q = self.queues[TX]
        backend = self.backend
        hdr = self.header_len
        sent = 0
        while sent < self.tx_burst:
            if backend is not None and self.link_up and not backend.can_send():
                self._tx_waiting = True  # send_ready() resumes
                break
            chain = q.pop()
            if chain is None:
                break
            if chain.readable_len < hdr:
                self.virtio_error(f"transmit buffer of {chain.readable_len} bytes is shorter "
                                  f"than the {hdr}-byte header", queue=q, desc=chain.head)
                return
            length = chain.readable_len - hdr
            self.stats["requests"] += 1
            if backend is not None and self.link_up and length and backend.send(
                    chain.readable_views(hdr, length)):
                self.stats["tx_frames"] += 1
                self.stats["tx_bytes"] += length
            else:
                self.stats["tx_dropped"] += 1
            q.push_used(chain, 0)
            sent += 1
        q.notify_guest()
        if sent >= self.tx_burst and q.has_available():
            self.call_soon(self._guarded, self._transmit)  # let the machine breathe

    def send_ready(self) -> None:
        """The back-end drained its output: take the waiting transmit buffers."""
        if self._tx_waiting and self.driver_ok:
            self._tx_waiting = False
            self._guarded(self._transmit)

    # -- receive (the NetFrontend protocol) ---------------------------------------------------

    def can_receive(self) -> bool:
        return self.driver_ok and self.queues[RX].enabled

    def receive(self, frame: bytes) -> bool:
        if not self.can_receive():
            return False
        if not self.link_up:
            self.stats["rx_dropped"] += 1
            return True
        try:
            return self._receive(frame)
        except Exception as exc:  # a bug here breaks the device, not the machine
            self.virtio_error(f"internal error: {type(exc).__name__}: {exc}",
                              queue=self.queues[RX])
            return False

    def _take_rx_chain(self, q: Virtqueue) -> Chain | None:
        chain = q.pop()
        if chain is None:
            return None
        if chain.writable_len < self.header_len:
            self.virtio_error(f"receive buffer of {chain.writable_len} writable bytes cannot "
                              f"hold the {self.header_len}-byte header", queue=q,
                              desc=chain.head)
            return None
        self._rx_chains.append(chain)
        return chain

    def _receive(self, frame: bytes) -> bool:
        q = self.queues[RX]
        hdr = self.header_len
        need = hdr + len(frame)
        chains = self._rx_chains
        room = 0
        if self.mergeable:
            room = sum(c.writable_len for c in chains)
            while room < need and (chain := self._take_rx_chain(q)) is not None:
                room += chain.writable_len
        elif not chains:
            self._take_rx_chain(q)
        if self.broken:
            return False
        if self.mergeable and room < need and len(chains) >= q.size:
            self.stats["rx_dropped"] += 1  # larger than the whole ring: it can never fit
            return True
        if not chains or (self.mergeable and room < need):
            self.stats["rx_waits"] += 1
            return False  # the frame waits for buffers in the back-end
        if not self.mergeable and chains[0].writable_len < need:
            self.stats["rx_dropped"] += 1  # QEMU: a buffer too small drops the frame
            return True
        view = memoryview(frame)
        pos = 0
        used: list[tuple[Chain, int]] = []
        while not used or pos < len(frame):
            chain = chains.popleft()
            start = hdr if not used else 0
            take = min(chain.writable_len - start, len(frame) - pos)
            if take:
                chain.write(view[pos:pos + take], start)
            pos += take
            used.append((chain, start + take))
        header = HEADER.pack(0, 0, 0, 0, 0, 0, len(used))[:hdr]
        used[0][0].write(header, 0)
        for chain, written in used:
            q.push_used(chain, written)
        q.notify_guest()
        self.stats["rx_frames"] += 1
        self.stats["rx_bytes"] += len(frame)
        self.stats["rx_buffers"] += len(used)
        return True

    # -- state and statistics -----------------------------------------------------------------

    def save_device_state(self) -> dict[str, Any]:
        return {"version": DEVICE_STATE_VERSION, "mac": self.macaddr.hex(),
                "link_up": self.link_up}

    def check_device_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"version", "mac", "link_up"}:
            raise StateError(f"{self.name}: device state has fields {sorted(state)}")
        if state["version"] != DEVICE_STATE_VERSION:
            raise StateError(f"{self.name}: device state version {state['version']!r} "
                             f"(this device reads {DEVICE_STATE_VERSION})")
        mac = state["mac"]
        if not isinstance(mac, str) or len(mac) != 12 or not all(
                c in "0123456789abcdef" for c in mac):
            raise StateError(f"{self.name}: bad MAC address {mac!r} in the state")
        if not isinstance(state["link_up"], bool):
            raise StateError(f"{self.name}: link_up must be a bool")

    def apply_device_state(self, state: dict[str, Any]) -> None:
        self.macaddr = bytes.fromhex(state["mac"])
        self.link_up = state["link_up"]
        self._rx_chains.clear()  # the in-flight receive buffers come back by restart()

    def statistics(self) -> dict[str, int]:
        out = super().statistics()
        out["rx_buffers_held"] = len(self._rx_chains)
        if self.backend is not None:
            out["backend_rx_pending"] = self.backend.pending_rx
        return out

    def __repr__(self) -> str:
        return f"VirtioNet(mac={format_mac(self.macaddr)}, backend={self.backend!r})"
