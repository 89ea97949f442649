"""The device parts of the virtio devices of riscv-virt in their state records:
virtio-blk's write cache, virtio-console's held receive buffer, virtio-rng's
empty part (virtio-net's MAC and link are tested with the NIC); round trips
through a second device, and bad device parts refused with nothing changed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.migration import StateError
from vmforge.testing.virtio_kit import guest_memory, make
from vmforge.virtio.mmio import VirtioMmioTransport
from vmforge_virtio.blk import VirtioBlk
from vmforge_virtio.console import VirtioConsole
from vmforge_virtio.rng import VirtioRng

WCE = 32        # virtio_blk_config.writeback


def _disk(tmp_path: Path) -> str:
    path = tmp_path / "d.raw"
    path.write_bytes(bytes(1 << 20))
    return str(path)


def test_blk_write_cache_round_trip_and_bad_part_refused(tmp_path: Path) -> None:
    dev = VirtioBlk(drive=_disk(tmp_path), format="raw")
    _dev, t, _drv, _queues = make(guest_memory(), device=dev)
    dev.config_write(WCE, 1, 0)                  # the driver turns the write cache off
    record = copy.deepcopy(t.save_state())
    assert record["device"]["device"] == {"version": 1, "writeback": False}
    dev.config_write(WCE, 1, 1)
    t.load_state(copy.deepcopy(record))
    assert dev.writeback is False
    bad = copy.deepcopy(record)
    bad["device"]["device"]["writeback"] = 1
    dev.config_write(WCE, 1, 1)
    before = t.save_state()
    with pytest.raises(StateError, match="virtio-blk-device: writeback must be a bool"):
        t.load_state(bad)
    assert t.save_state() == before
    dev.unrealize()


def test_console_receive_buffer_held_again_after_a_load() -> None:
    memory = guest_memory()
    first = VirtioConsole(chardev=BufferChar())
    _dev, t, drv, queues = make(memory, device=first)
    queues[0].add_sgs([], [16])
    queues[0].kick()
    assert first.can_receive() == 16             # the device holds the buffer
    record = copy.deepcopy(t.save_state())
    assert len(record["device"]["queues"][0]["ring"]["inflight"]) == 1
    chardev = BufferChar()
    other = VirtioConsole(chardev=chardev)
    t2 = VirtioMmioTransport(other)
    other.attach(memory, call_soon=lambda fn, *args: fn(*args))
    t2.load_state(record)
    drv.t = t2
    assert other.can_receive() == 16            # the same buffer, not a new one
    chardev.feed(b"hello")
    req = queues[0].get_buf()
    assert req is not None and req.data() == b"hello"


def test_rng_has_an_empty_device_part() -> None:
    dev = VirtioRng()
    _dev, t, _drv, _queues = make(guest_memory(), device=dev)
    record = copy.deepcopy(t.save_state())
    assert record["device"]["device"] == {}
    t.load_state(copy.deepcopy(record))
    record["device"]["device"] = {"pool": 5}
    before = t.save_state()
    with pytest.raises(StateError, match="virtio-rng-device: unexpected device state"):
        t.load_state(record)
    assert t.save_state() == before


def test_saving_drains_a_write_in_flight(tmp_path: Path) -> None:
    """A write held on an I/O thread when the machine is saved has completed (its
    status pushed to the used ring) before the record is taken, as QEMU drains."""
    import struct
    import threading
    import types

    from vmforge.migration.state import drain
    from vmforge.testing.virtio_driver import DeviceLoop

    dev = VirtioBlk(drive=_disk(tmp_path), format="raw")
    loop = DeviceLoop()
    _dev, t, _drv, queues = make(guest_memory(), device=dev, call_soon=loop.call_soon)
    release = threading.Event()
    real = dev.backend.pwritev

    def held(offset, views):        # type: ignore[no-untyped-def]
        release.wait(30)
        return real(offset, views)

    dev.backend.pwritev = held
    req = queues[0].add_sgs([struct.pack("<IIQ", 1, 0, 8), b"x" * 512], [1])
    queues[0].kick()
    assert t.save_state()["device"]["queues"][0]["ring"]["inflight"] != []
    threading.Timer(0.2, release.set).start()
    drain(types.SimpleNamespace(devices=[t]))
    record = t.save_state()
    assert record["device"]["queues"][0]["ring"]["inflight"] == []
    assert queues[0].get_buf() is req and req.data() == b"\0"     # S_OK
    dev.unrealize()
