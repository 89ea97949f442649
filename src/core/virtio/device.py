"""The base of every virtio device: features, status, config space, queues, errors.

A device subclasses :class:`VirtioDevice`, sets ``name``, ``device_id`` and
``queue_sizes``, and implements:

- :meth:`~VirtioDevice.device_features_bits`: its own feature bits;
- :meth:`~VirtioDevice.config_bytes`: its configuration space, as bytes;
- :meth:`~VirtioDevice.on_notify`: the driver kicked a queue;
- optionally :meth:`~VirtioDevice.activate` (DRIVER_OK), :meth:`~VirtioDevice.reset_device`,
  :meth:`~VirtioDevice.write_config`, :meth:`~VirtioDevice.restart` and the
  ``*_device_state`` pair for saving.

A transport (:mod:`vmforge.virtio.mmio`) drives it; the board creates the
transport around the device.  The device never raises into the CPU loop: a
driver that breaks the protocol gets :meth:`VirtioDevice.virtio_error` (as
QEMU's), the device goes to DEVICE_NEEDS_RESET and stops until the driver
resets it; the machine and other devices go on.

Threads: the transport calls the device on the machine's thread.  Work that
blocks (disk I/O) goes to :meth:`VirtioDevice.run_in_thread`, whose
completions come back to the machine's thread through ``call_soon`` and are
published in batches with one interrupt decision.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from vmforge._fast.vring import Chain
from vmforge.device import Device, Prop
from vmforge.lazy import lazy_logger
from vmforge.virtio import spec
from vmforge.virtio.queue import Virtqueue
from vmforge.virtio.state import StateError, check_record, restore_queues

TYPE_CHECKING = False
if TYPE_CHECKING:   # (imported by the first request a worker thread serves)
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any, ClassVar, Protocol
else:
    from vmforge.typing_runtime import Protocol

__all__ = ["StateError", "TransportLink", "VirtioDevice"]

log = lazy_logger("vmforge.virtio")  # (logging imported by a message)

STATE_VERSION = 1


class TransportLink(Protocol):
    """What a device asks of its transport: raising the two interrupt causes."""

    def signal_used(self, queue_index: int) -> None: ...

    def signal_config(self) -> None: ...


class _RateLimit:
    """At most ``burst`` messages a second; counts what it held back."""

    def __init__(self, burst: int = 10) -> None:
        self.burst = burst
        self.window = 0.0
        self.count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.suppressed:
                log.warning("virtio: %d more device errors not shown", self.suppressed)
            self.window, self.count, self.suppressed = now, 0, 0
        if self.count >= self.burst:
            self.suppressed += 1
            return False
        self.count += 1
        return True


class VirtioDevice(Device):
    """A virtio device model, independent of the transport that carries it."""

    #: the virtio device id (section 5), e.g. 4 for an entropy source
    device_id: ClassVar[int] = 0
    #: the largest size of each queue (their number is the number of queues)
    queue_sizes: ClassVar[tuple[int, ...]] = ()
    #: most segments one chain may have (QEMU's VIRTQUEUE_MAX_SIZE)
    max_segments: ClassVar[int] = 1024

    indirect_desc = Prop(bool, True, "offer VIRTIO_F_INDIRECT_DESC")
    event_idx = Prop(bool, True, "offer VIRTIO_F_EVENT_IDX")
    packed = Prop(bool, False, "offer VIRTIO_F_RING_PACKED (QEMU's default is off)")
    iothreads = Prop(int, 4, "worker threads of run_in_thread")

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        self.memory: Any = None  # GuestMemory, from attach()
        self._call_soon: Callable[..., None] | None = None
        self.transport: TransportLink | None = None
        self.legacy = False
        self.queues = [Virtqueue(self, i, n) for i, n in enumerate(self.queue_max_sizes())]
        self.status = 0
        self.driver_features = 0
        self.config_generation = 0
        self.broken = False
        self.stats: dict[str, int] = {"requests": 0, "bytes_read": 0, "bytes_written": 0,
                                      "errors": 0, "notifies": 0, "interrupts": 0}
        self.last_error: str | None = None
        self._errlog = _RateLimit()
        self._executor: ThreadPoolExecutor | None = None
        self._done: deque[tuple[Virtqueue, int, Chain, int, BaseException | None]] = deque()
        self._done_lock = threading.Lock()
        self._drain_scheduled = False
        self._busy = 0  # jobs submitted and not finished
        self._idle = threading.Condition(self._done_lock)

    # -- wiring ---------------------------------------------------------------------------

    def attach(self, memory: Any, call_soon: Callable[..., None] | None = None) -> None:
        """Give the device guest memory and the machine's ``call_soon`` (None: run
        completions on the calling thread, for single-threaded tests)."""
        self.memory = memory
        self._call_soon = call_soon

    def realize(self, machine: Any) -> None:
        """Take guest memory and ``call_soon`` from ``machine`` (the transport calls it)."""
        super().realize(machine)
        if self.memory is None:
            self.attach(machine.space.memory, machine.call_soon)

    def unrealize(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        super().unrealize()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the machine's thread (now, without a machine)."""
        if self._call_soon is None:
            fn(*args)
        else:
            self._call_soon(fn, *args)

    # -- what a device declares (override) ---------------------------------------------------

    def queue_max_sizes(self) -> list[int]:
        return list(self.queue_sizes)

    def device_features_bits(self) -> int:
        """The device-specific feature bits (0-23, 50-127)."""
        return 0

    def config_bytes(self) -> bytes:
        """The configuration space as the driver reads it (little-endian fields)."""
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """The driver wrote ``data`` at ``offset`` of the config space (default: ignored)."""

    def on_notify(self, queue: Virtqueue) -> None:
        """The driver made buffers available on ``queue``."""

    def activate(self) -> None:
        """The driver set DRIVER_OK: features are final, queues are set up."""

    def reset_device(self) -> None:
        """Drop device-specific state (the queues and status are reset by the base)."""

    def restart(self, queue: Virtqueue, chain: Chain) -> None:
        """Process ``chain`` again after a state load (it was in flight when saved).
        The default gives it back with nothing written."""
        queue.push_used(chain, 0)

    def save_device_state(self) -> dict[str, Any]:
        return {}

    def check_device_state(self, state: dict[str, Any]) -> None:
        """Raise :class:`StateError` if ``state`` is not a valid device record."""
        if state:
            raise StateError(f"{self.name}: unexpected device state {sorted(state)}")

    def apply_device_state(self, state: dict[str, Any]) -> None:
        """Take a record :meth:`check_device_state` accepted."""

    # -- features -------------------------------------------------------------------------

    def device_features(self) -> int:
        """Every feature bit offered on this transport (device and ring bits)."""
        bits = self.device_features_bits()
        if self.indirect_desc:
            bits |= 1 << spec.VIRTIO_F_INDIRECT_DESC
        if self.event_idx:
            bits |= 1 << spec.VIRTIO_F_EVENT_IDX
        if self.legacy:     # QEMU's common legacy bits
            bits |= 1 << spec.VIRTIO_F_ANY_LAYOUT | 1 << spec.VIRTIO_F_NOTIFY_ON_EMPTY
        else:               # both transports reset single queues (QueueReset)
            bits |= 1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_F_RING_RESET
            if self.packed:
                bits |= 1 << spec.VIRTIO_F_RING_PACKED
        return bits

    def has_feature(self, bit: int) -> bool:
        """Whether the driver accepted feature ``bit``."""
        return bool(self.driver_features >> bit & 1)

    def set_driver_features(self, value: int) -> None:
        """The driver's feature bits; ignored once they are final."""
        final = spec.STATUS_DRIVER_OK if self.legacy else spec.STATUS_FEATURES_OK
        if self.status & final:
            return
        self.driver_features = value & ((1 << 64) - 1)

    def features_acceptable(self) -> str | None:
        """Why the driver's features cannot be accepted, or None."""
        extra = self.driver_features & ~self.device_features()
        if extra:
            return f"driver accepted features {extra:#x} the device did not offer"
        if not self.legacy and not self.has_feature(spec.VIRTIO_F_VERSION_1):
            return "driver did not accept VIRTIO_F_VERSION_1"
        return None

    # -- status -------------------------------------------------------------------------

    def set_status(self, value: int) -> None:
        """The driver wrote the Status register (0: reset)."""
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        old = self.status
        new = (value & ~spec.STATUS_DEVICE_NEEDS_RESET) | (old & spec.STATUS_DEVICE_NEEDS_RESET)
        if not self.legacy and new & spec.STATUS_FEATURES_OK and not old & spec.STATUS_FEATURES_OK:
            why = self.features_acceptable()
            if why is not None:
                log.info("%s: FEATURES_OK refused: %s", self.name, why)
                new &= ~spec.STATUS_FEATURES_OK
        self.status = new
        if new & spec.STATUS_DRIVER_OK and not old & spec.STATUS_DRIVER_OK:
            if not self.legacy and not new & spec.STATUS_FEATURES_OK:
                self.virtio_error("DRIVER_OK without FEATURES_OK")
                return
            why = self.features_acceptable() if self.legacy else None
            if why is not None:
                self.virtio_error(why)
                return
            self._guarded(self.activate)
            for q in self.queues:  # buffers made available before DRIVER_OK
                if q.has_available():
                    self.notify(q.index)

    @property
    def driver_ok(self) -> bool:
        return bool(self.status & spec.STATUS_DRIVER_OK) and not self.broken

    def reset(self) -> None:
        """Device reset: in-flight requests are waited for (bounded) and dropped."""
        self._drain_io(timeout=5.0)
        with self._done_lock:
            self._done.clear()
        for q in self.queues:
            q.clear()
        self.status = 0
        self.driver_features = 0
        self.broken = False
        self._guarded(self.reset_device)

    # -- notifications ----------------------------------------------------------------------

    def notify(self, index: int) -> None:
        """The driver kicked queue ``index`` (the transport calls this)."""
        if not 0 <= index < len(self.queues):
            return
        q = self.queues[index]
        if not self.driver_ok or q.ring is None:
            return
        self.stats["notifies"] += 1
        self._guarded(self.on_notify, q)

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run device code; a bug there breaks this device, not the machine."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("%s: internal error in %s", self.name, getattr(fn, "__name__", fn))
            self.virtio_error(f"internal error: {type(exc).__name__}: {exc}")

    def signal_used(self, queue: Virtqueue) -> None:
        """Raise the used-buffer interrupt (called by :meth:`Virtqueue.notify_guest`)."""
        self.stats["interrupts"] += 1
        if self.transport is not None:
            self.transport.signal_used(queue.index)

    def config_changed(self) -> None:
        """The config space changed: bump the generation, raise the config interrupt."""
        self.config_generation = (self.config_generation + 1) & 0xFFFFFFFF
        if self.transport is not None:
            self.transport.signal_config()

    # -- config space -------------------------------------------------------------------------

    def config_read(self, offset: int, size: int) -> int:
        """A read past the config space gives all ones, as QEMU's transports."""
        data = self.config_bytes()
        if offset < 0 or offset + size > len(data):
            return (1 << (8 * size)) - 1
        return int.from_bytes(data[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if offset < 0 or offset + size > len(self.config_bytes()):
            return
        self.write_config(offset, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    # -- errors ------------------------------------------------------------------------------

    def virtio_error(self, message: str, queue: Virtqueue | None = None,
                     desc: int | None = None) -> None:
        """The driver (or the device) broke the protocol: stop the device, set
        DEVICE_NEEDS_RESET, raise the config interrupt, log (rate-limited)."""
        where = "" if queue is None else f" queue {queue.index}"
        if desc is not None and desc >= 0:
            where += f" descriptor {desc}"
        text = f"{self.name}:{where}: {message}" if where else f"{self.name}: {message}"
        if not self.broken:
            self.last_error = text  # the first error is the one that explains
        self.stats["errors"] += 1
        if self._errlog.allow():
            log.warning("virtio: %s", text)
        already = self.broken
        self.broken = True
        if not self.legacy:
            self.status |= spec.STATUS_DEVICE_NEEDS_RESET
            if not already:
                self.config_changed()

    # -- blocking work on I/O threads ------------------------------------------------------------

    def run_in_thread(self, queue: Virtqueue, chain: Chain, work: Callable[[Chain], int]) -> None:
        """Run ``work(chain)`` on a worker thread; its result (bytes written into the
        chain) is pushed on the machine's thread, in batches with one interrupt
        decision per queue.  ``work`` only touches the chain's memory views; an
        exception from it is a device error.  A reset drops the completion."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max(1, self.iothreads),
                                                thread_name_prefix=f"{self.name}-io")
        generation = queue.generation
        with self._done_lock:
            self._busy += 1

        def job() -> None:
            error: BaseException | None = None
            written = 0
            try:
                written = work(chain)
            except Exception as exc:  # reported on the machine's thread
                log.exception("%s: I/O worker failed", self.name)
                error = exc
            with self._done_lock:
                self._done.append((queue, generation, chain, written, error))
                schedule = not self._drain_scheduled
                self._drain_scheduled = True
                self._busy -= 1
                self._idle.notify_all()
            if schedule:
                self.call_soon(self._guarded, self.complete_pending)

        self._executor.submit(job)

    def complete_pending(self) -> int:
        """Push finished work and notify each queue once (the machine's thread)."""
        with self._done_lock:
            done = list(self._done)
            self._done.clear()
            self._drain_scheduled = False
        touched: dict[int, Virtqueue] = {}
        for queue, generation, chain, written, error in done:
            if generation != queue.generation or self.broken:
                continue  # the queue was reset meanwhile: the request is dropped
            if error is not None:
                self.virtio_error(f"internal error: {type(error).__name__}: {error}",
                                  queue=queue, desc=chain.head)
                continue
            queue.push_used(chain, written)
            touched[queue.index] = queue
        for queue in touched.values():
            queue.notify_guest()
        return len(done)

    def _drain_io(self, timeout: float) -> bool:
        """Wait until no worker job is running (True) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._done_lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%s: %d I/O requests still running at reset", self.name,
                                self._busy)
                    return False
                self._idle.wait(left)
        return True

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Requests, bytes, errors, kicks and interrupts so far."""
        out = dict(self.stats)
        out["inflight"] = sum(len(q.inflight) for q in self.queues)
        return out

    # -- state ------------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """A record of plain values: transport-visible state, queues, device state."""
        return {
            "type": "virtio-device", "name": self.name, "version": STATE_VERSION,
            "device_id": self.device_id, "legacy": self.legacy, "status": self.status,
            "driver_features": self.driver_features, "offered": self.device_features(),
            "config_generation": self.config_generation, "broken": self.broken,
            "queues": [q.save_state() for q in self.queues],
            "device": self.save_device_state(),
        }

    def check_state(self, record: Any) -> None:
        """:class:`StateError` unless ``record`` is a valid record of this device (its
        rings, in guest memory, are walked by :meth:`load_state`: load RAM first)."""
        check_record(self, record, STATE_VERSION)
        self.check_device_state(record["device"])

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait for the I/O workers and push what they finished (the machine's
        thread; QEMU drains so before it stops a VM): True when nothing is left."""
        idle = self._drain_io(timeout)
        self.complete_pending()
        return idle

    def load_state(self, record: dict[str, Any]) -> None:
        """Take a :meth:`save_state` record; :class:`StateError` (and nothing changed)
        when it is not valid for this device."""
        check_record(self, record, STATE_VERSION)
        self.check_device_state(record["device"])
        staged = restore_queues(self, record)  # builds rings, re-walks in-flight chains
        self._drain_io(timeout=5.0)
        self.legacy = record["legacy"]
        self.status = record["status"]
        self.driver_features = record["driver_features"]
        self.config_generation = record["config_generation"]
        self.broken = record["broken"]
        for queue, apply in zip(self.queues, staged, strict=True):
            apply(queue)
        self.apply_device_state(record["device"])
        for queue in self.queues:
            chains = list(queue.inflight.values())
            for chain in chains:
                self._guarded(self.restart, queue, chain)
            if chains:
                queue.notify_guest()
