"""A conformance suite for virtio devices, for third-party device authors.

Subclass :class:`VirtioConformance` in your tests and give it your device::

    from vmforge.testing.virtio_suite import VirtioConformance

    class TestMyDevice(VirtioConformance):
        def make_device(self):
            return MyDevice(some_prop=1)

Each check drives the device through a virtio-mmio transport with the
guest-side driver (:mod:`vmforge.testing.virtio_driver`): the register file,
feature negotiation (unoffered bits and a missing VERSION_1 clear
FEATURES_OK), reset, config space bounds, a hostile chain on every queue
(the device must end in DEVICE_NEEDS_RESET, not raise), buffers outside RAM,
statistics, and a save/load round trip.  A device whose queues need buffers
of a given shape can override :meth:`VirtioConformance.sample_buffer`.
"""

from __future__ import annotations

import copy
from typing import Any

from vmforge.testing.virtio_driver import F_NEXT, DeviceLoop, GuestAllocator, MmioDriver
from vmforge.testing.virtio_kit import RAM, RAM_SIZE, guest_memory
from vmforge.virtio import VirtioDevice, VirtioMmioTransport, mmio, spec

__all__ = ["VirtioConformance"]


class VirtioConformance:
    """Mix-in test class: subclass it and implement :meth:`make_device`."""

    #: the queue :meth:`test_well_formed_buffers_and_statistics` uses
    sample_queue = 0
    #: queues the device pops when kicked (None: all); a receive queue that is only
    #: popped when host data arrives is left out
    eager_queues: tuple[int, ...] | None = None

    def make_device(self) -> VirtioDevice:
        raise NotImplementedError("return a new instance of the device under test")

    def sample_buffer(self, queue_index: int) -> tuple[list[bytes], list[int]]:
        """A well-formed buffer for ``queue_index``: (readable parts, writable sizes)."""
        return [], [64]

    # -- helpers --------------------------------------------------------------------------

    def _stack(self, legacy: bool = False) -> tuple[VirtioDevice, VirtioMmioTransport,
                                                    MmioDriver, DeviceLoop]:
        loop = DeviceLoop()
        dev = self.make_device()
        t = VirtioMmioTransport(dev, legacy=legacy)
        drv = MmioDriver(t, guest_memory(), GuestAllocator(RAM, RAM_SIZE),
                         call_soon=loop.call_soon)
        return dev, t, drv, loop

    @staticmethod
    def _close(dev: VirtioDevice) -> None:
        dev.unrealize()

    # -- the checks -------------------------------------------------------------------------

    def test_identity_registers(self) -> None:
        dev, _t, drv, _loop = self._stack()
        try:
            assert drv.rd(mmio.MAGIC_VALUE) == mmio.MAGIC
            assert drv.rd(mmio.VERSION) == 2
            assert drv.rd(mmio.DEVICE_ID) == dev.device_id != 0
            assert dev.name, "a device needs its registry name"
            assert dev.queues, "a device needs at least one queue"
            for i, q in enumerate(dev.queues):
                drv.wr(mmio.QUEUE_SEL, i)
                assert drv.rd(mmio.QUEUE_NUM_MAX) == q.max_size
                assert 1 <= q.max_size <= spec.MAX_QUEUE_SIZE
                assert q.max_size & (q.max_size - 1) == 0, "split rings need a power of 2"
            assert drv.device_features() >> spec.VIRTIO_F_VERSION_1 & 1
        finally:
            self._close(dev)

    def test_feature_negotiation(self) -> None:
        dev, _t, drv, _loop = self._stack()
        try:
            offered = drv.device_features()
            unoffered = next(b for b in range(64) if not offered >> b & 1)
            drv.wr(mmio.STATUS, spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER)
            drv.write_features(offered | 1 << unoffered)
            drv.wr(mmio.STATUS, drv.status | spec.STATUS_FEATURES_OK)
            assert not drv.status & spec.STATUS_FEATURES_OK
            assert not drv.negotiate(accept=~(1 << spec.VIRTIO_F_VERSION_1))
            assert drv.negotiate()
        finally:
            self._close(dev)

    def test_reset_returns_to_zero(self) -> None:
        dev, _t, drv, _loop = self._stack()
        try:
            drv.setup()
            drv.wr(mmio.STATUS, 0)
            assert drv.status == 0 and dev.driver_features == 0
            assert all(not q.ready for q in dev.queues)
            drv.setup()  # and initialises again
            assert drv.status & spec.STATUS_DRIVER_OK
        finally:
            self._close(dev)

    def test_config_space_bounds(self) -> None:
        dev, _t, drv, _loop = self._stack()
        try:
            size = len(dev.config_bytes())
            assert size <= 0x1000 - mmio.CONFIG
            assert drv.config(size + 64, 4) == 0xFFFFFFFF  # past the end: all ones, as QEMU
            drv.t.write(mmio.CONFIG + size + 64, 4, 0xFFFFFFFF)
        finally:
            self._close(dev)

    def test_hostile_chain_on_every_queue(self) -> None:
        probe = self.make_device()
        count = len(probe.queues)
        probe.unrealize()
        for index in self.eager_queues if self.eager_queues is not None else range(count):
            dev, _t, drv, _loop = self._stack()
            try:
                queues = drv.setup()
                q = queues[index]
                q.write_desc(0, RAM + 0x1000, 16, F_NEXT, 0)  # a loop
                q.publish(0)
                drv.wr(mmio.QUEUE_NOTIFY, index)
                assert dev.broken, f"queue {index}: a looping chain was not refused"
                assert drv.status & spec.STATUS_DEVICE_NEEDS_RESET
                assert drv.rd(mmio.INTERRUPT_STATUS) & mmio.INT_CONFIG
            finally:
                self._close(dev)

    def test_buffer_outside_ram(self) -> None:
        dev, _t, drv, _loop = self._stack()
        try:
            q = drv.setup()[self.sample_queue]
            q.add_sgs([], [(0x1000, 64)])  # nothing is mapped at 0x1000
            drv.wr(mmio.QUEUE_NOTIFY, self.sample_queue)
            assert dev.broken and "outside RAM" in (dev.last_error or "")
        finally:
            self._close(dev)

    def test_well_formed_buffers_and_statistics(self) -> None:
        dev, _t, drv, loop = self._stack()
        try:
            queues = drv.setup()
            out, in_ = self.sample_buffer(self.sample_queue)
            req = queues[self.sample_queue].add_sgs(out, in_)
            queues[self.sample_queue].kick()
            loop.run_until(lambda: not dev.statistics()["inflight"], 5)
            assert not dev.broken, dev.last_error
            stats = dev.statistics()
            assert isinstance(stats, dict) and all(isinstance(v, int) for v in stats.values())
            assert stats["errors"] == 0 and req is not None
        finally:
            self._close(dev)

    def test_legacy_transport(self) -> None:
        dev, _t, drv, _loop = self._stack(legacy=True)
        try:
            drv.setup()
            assert drv.rd(mmio.VERSION) == 1 and not dev.broken
            assert not dev.driver_features >> spec.VIRTIO_F_VERSION_1 & 1
        finally:
            self._close(dev)

    def test_save_load_round_trip(self) -> None:
        dev, t, drv, _loop = self._stack()
        try:
            drv.setup()
            record = t.save_state()
            again = copy.deepcopy(record)
            self._close(dev)  # its host resources (an image lock) go before the twin opens
            other = self.make_device()
            t2 = VirtioMmioTransport(other)
            other.attach(drv.memory)
            t2.load_state(again)
            assert t2.save_state() == record
            bad: dict[str, Any] = copy.deepcopy(record)
            bad["device"]["version"] = -1
            try:
                t2.load_state(bad)
            except ValueError:
                pass
            else:
                raise AssertionError("a record with a wrong version was accepted")
            assert t2.save_state() == record
            other.unrealize()
        finally:
            self._close(dev)
