"""The network back-end interface: what a NIC model sees of the outside.

A NIC (``virtio-net-device``) is the *frontend*; a back-end (socket, tap,
user) is the other end of its cable.  The frontend hands guest frames to
:meth:`NetBackend.send` and receives outside frames through the
:class:`NetFrontend` protocol::

    backend.attach(nic)           # frames from outside go to nic.receive()
    backend.send([hdr_view, ...]) # a guest frame, as buffers (guest memory views)

Flow control, both ways (QEMU's ``can_receive`` / ``qemu_flush_queued_packets``
and ``qemu_send_packet_async``):

- *to the guest*: frames from outside wait in the back-end's queue until the
  frontend takes them (``receive`` returns False when the guest has no buffers);
  when the queue holds :attr:`NetBackend.rx_queue_frames` frames the back-end
  stops reading its source (TCP pushes back, a tap's kernel queue fills).  The
  frontend calls :meth:`NetBackend.accept_input` when new buffers arrive.
- *from the guest*: :meth:`NetBackend.can_send` turns False while more than
  :attr:`NetBackend.tx_queue_bytes` wait to go out; the frontend stops taking
  frames from the guest and is told by ``send_ready()`` when to go on.

Threads: back-ends read and write from their own I/O thread.  Delivery to the
frontend (``receive``, ``send_ready``) goes through :attr:`NetBackend.dispatch`,
the machine's ``call_soon``, so device code only runs on the machine's thread;
:meth:`NetBackend.send`, ``can_send`` and ``accept_input`` are called there too.
Without a dispatch function, delivery runs on the thread where a frame arrives
(tests that are single-threaded).

Directions are named from the guest's side, as QEMU and the guest's ``ip -s
link`` do: *rx* is outside -> guest, *tx* guest -> outside.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from vmforge.chardev import DeliveryPump
from vmforge.errors import VmforgeError

__all__ = ["MAX_FRAME", "BufferNet", "Frame", "NetBackend", "NetFrontend", "NetdevError"]

log = logging.getLogger("vmforge.net")

#: the largest frame a back-end carries (QEMU's NET_BUFSIZE: 4096 + 65536)
MAX_FRAME = 4096 + 65536

#: what :meth:`NetBackend.send` takes: the frame as one or more buffers
Frame = Sequence[bytes | bytearray | memoryview]


class NetdevError(VmforgeError, ValueError):
    """A network back-end was specified wrongly or could not be opened (names it)."""


@runtime_checkable
class NetFrontend(Protocol):
    """What a back-end asks of the NIC it feeds (called on the machine's thread)."""

    def can_receive(self) -> bool:
        """Whether the NIC could take a frame now (driver up, receive buffers there)."""
        ...

    def receive(self, frame: bytes) -> bool:
        """Take ``frame``; False when it cannot yet (the frame stays queued in the
        back-end until the NIC calls :meth:`NetBackend.accept_input`)."""
        ...

    def send_ready(self) -> None:
        """The back-end can take frames again after :meth:`NetBackend.can_send` was False."""
        ...


def frame_length(frame: Frame) -> int:
    return sum(memoryview(part).nbytes for part in frame)


class NetBackend:
    """Base class of network back-ends: the queue towards the frontend, its flow
    control, statistics and the life cycle.

    Subclasses put guest frames on the wire in :meth:`_send` and call
    :meth:`_arrived` with each frame from outside (from any thread); reading
    back-ends check :meth:`rx_room` before reading and hear :meth:`_rx_resumed`
    when the frontend took frames again.
    """

    #: the ``-netdev`` type (``socket``, ``tap``, ``user``)
    type: ClassVar[str] = ""
    #: options ``-netdev TYPE,...`` accepts besides ``id`` (checked by :meth:`from_spec`)
    options: ClassVar[tuple[str, ...]] = ()
    #: frames from outside held for the frontend before reading stops
    rx_queue_frames: ClassVar[int] = 64
    #: bytes of guest frames waiting to go out before :meth:`can_send` says no
    tx_queue_bytes: ClassVar[int] = 256 << 10

    def __init__(self, id: str = "", *,
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.id = id or self.type
        #: runs a callable on the machine's thread (its ``call_soon``); None: at once
        self.dispatch = dispatch
        self.closed = False
        self._frontend: NetFrontend | None = None
        self._rx: deque[bytes] = deque()
        self._rx_lock = threading.Lock()
        #: delivers queued frames to the frontend, one thread at a time
        self._pump = DeliveryPump(self._deliver)
        self._tx_blocked = False
        self._stat_lock = threading.Lock()
        self.stats: dict[str, int] = {"rx_frames": 0, "rx_bytes": 0, "rx_dropped": 0,
                                      "tx_frames": 0, "tx_bytes": 0, "tx_dropped": 0}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"

    @classmethod
    def from_spec(cls, id: str, options: dict[str, Any], *,
                  dispatch: Callable[[Callable[[], None]], object] | None = None
                  ) -> NetBackend:
        """A back-end from ``-netdev TYPE,id=ID,options...`` (values as the command
        line gives them); :class:`NetdevError` names an unknown option."""
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise NetdevError(f"-netdev {cls.type},id={id}: invalid parameter "
                              f"{unknown[0]!r} (it takes: {', '.join(cls.options) or 'none'})")
        kwargs = {key.replace("-", "_"): value for key, value in options.items()}
        return cls(id, dispatch=dispatch, **kwargs)

    # -- the frontend -----------------------------------------------------------------

    @property
    def frontend(self) -> NetFrontend | None:
        return self._frontend

    def attach(self, frontend: NetFrontend | None) -> None:
        """Make ``frontend`` the receiver of frames (None detaches); queued frames
        are delivered as it has room."""
        self._frontend = frontend
        if frontend is not None:
            self._schedule_pump()

    def detach(self) -> None:
        """Stop delivering; frames stay queued for the next frontend."""
        self._frontend = None

    def accept_input(self) -> None:
        """The frontend has receive buffers again: deliver what is queued."""
        self._pump()

    @property
    def pending_rx(self) -> int:
        """Frames from outside waiting for the frontend."""
        with self._rx_lock:
            return len(self._rx)

    def rx_room(self) -> bool:
        """Whether a reading back-end should read more now."""
        with self._rx_lock:
            return len(self._rx) < self.rx_queue_frames

    # -- guest -> outside ---------------------------------------------------------------

    def can_send(self) -> bool:
        """Whether :meth:`send` would take a frame without queueing past the limit."""
        if self.closed:
            return False
        if self._tx_pending() < self.tx_queue_bytes:
            return True
        self._tx_blocked = True  # then look again: a drain in between would not signal
        return self._tx_pending() < self.tx_queue_bytes

    def send(self, frame: Frame) -> bool:
        """Send one guest frame (a sequence of buffers; they are not kept after the
        call returns).  True when sent or queued, False when dropped (closed, not
        connected, empty or larger than :data:`MAX_FRAME`)."""
        length = frame_length(frame)
        if self.closed or not 0 < length <= MAX_FRAME or not self._send(frame, length):
            self._count(tx_dropped=1)
            return False
        self._count(tx_frames=1, tx_bytes=length)
        return True

    def _send(self, frame: Frame, length: int) -> bool:
        """Subclass hook: put the frame out or queue a copy; False drops it."""
        raise NotImplementedError

    def _tx_pending(self) -> int:
        """Subclass hook: bytes queued and not yet written."""
        return 0

    def _tx_drained(self) -> None:
        """Subclasses call this when their output queue emptied: a frontend that
        was told ``can_send() == False`` hears ``send_ready``."""
        if not self._tx_blocked:
            return
        self._tx_blocked = False
        self._to_frontend(self._send_ready)

    def _send_ready(self) -> None:
        fe = self._frontend
        if fe is not None:
            fe.send_ready()

    # -- outside -> guest ----------------------------------------------------------------

    def _arrived(self, frame: bytes, drop_when_full: bool = False) -> bool:
        """A frame from outside (any thread).  Queued for the frontend; with
        ``drop_when_full`` it is dropped (False) when the queue is full."""
        if not frame or len(frame) > MAX_FRAME:
            self._count(rx_dropped=1)
            return False
        with self._rx_lock:
            if drop_when_full and len(self._rx) >= self.rx_queue_frames:
                full = True
            else:
                full = False
                self._rx.append(frame)
        if full:
            self._count(rx_dropped=1)
            return False
        self._schedule_pump()
        return True

    def _schedule_pump(self) -> None:
        self._to_frontend(self._pump)

    def _to_frontend(self, fn: Callable[[], None]) -> None:
        dispatch = self.dispatch
        if dispatch is None:
            fn()
        else:
            dispatch(fn)

    def _deliver(self) -> None:
        took = False
        while True:
            fe = self._frontend
            if fe is None or self.closed:
                break
            with self._rx_lock:
                if not self._rx:
                    break
                frame = self._rx[0]
            if not fe.can_receive() or not fe.receive(frame):
                break
            with self._rx_lock:
                self._rx.popleft()
            took = True
            self._count(rx_frames=1, rx_bytes=len(frame))
        if took and self.rx_room():
            self._rx_resumed()

    def _rx_resumed(self) -> None:
        """Subclass hook: the queue has room again (wake the reader)."""

    # -- statistics and life cycle -------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._stat_lock:
            for key, value in deltas.items():
                self.stats[key] += value

    def statistics(self) -> dict[str, int]:
        """Frames and bytes both ways, drops, frames waiting for the guest."""
        with self._stat_lock:
            out = dict(self.stats)
        out["rx_pending"] = self.pending_rx
        out["tx_pending"] = self._tx_pending()
        return out

    def close(self) -> None:
        """Release host resources; later frames are dropped."""
        self.closed = True
        self._frontend = None

    def __enter__(self) -> NetBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BufferNet(NetBackend):
    """A back-end in memory, for tests and scripts: guest frames collect in
    :attr:`sent`; :meth:`inject` plays a frame from outside."""

    type: ClassVar[str] = "buffer"

    def __init__(self, id: str = "", *,
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().__init__(id, dispatch=dispatch)
        self.sent: list[bytes] = []
        self._sent_cv = threading.Condition()

    def _send(self, frame: Frame, length: int) -> bool:
        with self._sent_cv:
            self.sent.append(b"".join(bytes(part) for part in frame))
            self._sent_cv.notify_all()
        return True

    def inject(self, frame: bytes) -> None:
        """A frame from outside, for the guest (queued until the frontend takes it)."""
        self._arrived(bytes(frame))

    def wait_sent(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """The guest frames once at least ``count`` were sent (TimeoutError if not)."""
        with self._sent_cv:
            if not self._sent_cv.wait_for(lambda: len(self.sent) >= count, timeout):
                raise TimeoutError(f"{len(self.sent)} of {count} frames sent")
            return list(self.sent)
