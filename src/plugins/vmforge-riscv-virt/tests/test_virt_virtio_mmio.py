"""virtio-mmio: the empty slots of the virt board, compared with QEMU's, and the
modern register file with a stand-in back-end."""

from __future__ import annotations

import pytest

from vmforge.virtio import mmio
from vmforge.virtio.mmio import VirtioMmioTransport
from vmforge_riscv_virt import board as virt

SLOT0 = virt.MEMMAP["virtio"].base
SLOT_SIZE = virt.MEMMAP["virtio"].size


@pytest.fixture
def slots(board):
    devs = []
    for i in range(virt.VIRTIO_COUNT):
        dev = VirtioMmioTransport()
        board.space.add_mmio(SLOT0 + i * SLOT_SIZE, dev, SLOT_SIZE, f"virtio{i}")
        devs.append(dev)
    return board.space, devs


def test_empty_slot_answers_no_device(slots):
    space, _ = slots
    for i in range(virt.VIRTIO_COUNT):
        base = SLOT0 + i * SLOT_SIZE
        assert space.read(base + mmio.MAGIC_VALUE, 4) == 0x74726976
        assert space.read(base + mmio.VERSION, 4) == 2
        assert space.read(base + mmio.DEVICE_ID, 4) == 0
        assert space.read(base + mmio.VENDOR_ID, 4) == 0x554D4551
        for off in range(0x10, 0x200, 4):
            assert space.read(base + off, 4) == 0, hex(off)
        assert space.read(base + 0x800, 4) == 0  # the rest of the 4 KiB slot


def test_empty_slot_ignores_writes(slots):
    space, devs = slots
    base = SLOT0
    for off in range(0, 0x200, 4):
        space.write(base + off, 4, 0xFFFFFFFF)
    space.write(base + mmio.STATUS, 4, 0)
    assert space.read(base + mmio.MAGIC_VALUE, 4) == mmio.MAGIC
    assert space.read(base + mmio.STATUS, 4) == 0
    assert space.read(base + mmio.QUEUE_NUM_MAX, 4) == 0
    assert not devs[0].irq.level


def test_narrow_reads_mask_like_qemu(slots):
    space, _ = slots
    assert space.read(SLOT0, 1) == 0x76
    assert space.read(SLOT0, 2) == 0x6976
    assert space.read(SLOT0 + 2, 2) == 0  # QEMU answers the exact offset only
    assert space.read(SLOT0 + 1, 1) == 0
    assert space.read(SLOT0, 8) == 0  # wider than 32 bits: not a valid access


def test_empty_slots_match_qemu(qemu):
    """QEMU 7.2's empty slot: same answers except Version (its force-legacy=on says 1)."""
    theirs = qemu.xp_words(SLOT0, 0x100 // 4)
    assert len(theirs) == 0x40
    ours = VirtioMmioTransport(legacy=True)
    assert [ours.read(4 * i, 4) for i in range(0x100 // 4)] == theirs
    out = qemu.monitor([f"xp /1bx {SLOT0:#x}", f"xp /1bx {SLOT0 + 1:#x}",
                        f"xp /1hx {SLOT0 + 2:#x}", f"xp /1hx {SLOT0 + 0xC:#x}"])
    values = [int(line.split(": ")[1], 16) for line in out.splitlines()
              if line.startswith("00000000100010")]
    assert values == [ours.read(0, 1), ours.read(1, 1), ours.read(2, 2), ours.read(0xC, 2)]
    modern = VirtioMmioTransport()
    assert modern.read(mmio.VERSION, 4) == 2 and theirs[1] == 1


class Backend:
    device_id = 4  # entropy source

    def __init__(self) -> None:
        self.notified: list[int] = []
        self.resets = 0
        self.config = bytearray(b"\x11\x22\x33\x44")

    def device_features(self) -> int:
        return 1 << 32 | 0b101  # VIRTIO_F_VERSION_1 and two device bits

    def queue_max_sizes(self) -> list[int]:
        return [256]

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.config[offset:offset + size] = value.to_bytes(size, "little")

    def queue_notify(self, index: int) -> None:
        self.notified.append(index)

    def device_reset(self) -> None:
        self.resets += 1


def test_driver_initialisation_sequence_with_a_backend():
    be = Backend()
    t = VirtioMmioTransport(be)
    assert isinstance(be, mmio.VirtioMmioBackend)
    assert t.read(mmio.DEVICE_ID, 4) == 4 and t.read(mmio.VERSION, 4) == 2
    t.write(mmio.STATUS, 4, mmio.STATUS_ACKNOWLEDGE | mmio.STATUS_DRIVER)
    t.write(mmio.DEVICE_FEATURES_SEL, 4, 1)
    assert t.read(mmio.DEVICE_FEATURES, 4) == 1
    t.write(mmio.DEVICE_FEATURES_SEL, 4, 0)
    assert t.read(mmio.DEVICE_FEATURES, 4) == 0b101
    t.write(mmio.DRIVER_FEATURES_SEL, 4, 1)
    t.write(mmio.DRIVER_FEATURES, 4, 1)
    t.write(mmio.DRIVER_FEATURES_SEL, 4, 0)
    t.write(mmio.DRIVER_FEATURES, 4, 0b100)
    assert t.driver_features == 1 << 32 | 0b100
    t.write(mmio.QUEUE_SEL, 4, 0)
    assert t.read(mmio.QUEUE_NUM_MAX, 4) == 256
    t.write(mmio.QUEUE_NUM, 4, 128)
    for reg, value in ((mmio.QUEUE_DESC_LOW, 0x1000), (mmio.QUEUE_DESC_HIGH, 1),
                       (mmio.QUEUE_DRIVER_LOW, 0x2000), (mmio.QUEUE_DEVICE_LOW, 0x3000)):
        t.write(reg, 4, value)
    t.write(mmio.QUEUE_READY, 4, 1)
    q = t.queues[0]
    assert (q.size, q.desc, q.driver, q.device, q.ready) == (128, 1 << 32 | 0x1000,
                                                             0x2000, 0x3000, True)
    t.write(mmio.QUEUE_DESC_LOW, 4, 0)  # a live queue does not change
    assert q.desc == 1 << 32 | 0x1000
    t.write(mmio.QUEUE_SEL, 4, 1)
    assert t.read(mmio.QUEUE_NUM_MAX, 4) == 0  # no queue 1
    t.write(mmio.QUEUE_NOTIFY, 4, 0)
    t.write(mmio.QUEUE_NOTIFY, 4, 7)
    assert be.notified == [0]
    assert t.read(mmio.CONFIG, 2) == 0x2211
    t.write(mmio.CONFIG + 2, 1, 0x99)
    assert be.config[2] == 0x99
    t.notify_used()
    assert t.irq.level and t.read(mmio.INTERRUPT_STATUS, 4) == mmio.INT_VRING
    t.notify_config()
    assert t.read(mmio.CONFIG_GENERATION, 4) == 1
    t.write(mmio.INTERRUPT_ACK, 4, mmio.INT_VRING)
    assert t.irq.level
    t.write(mmio.INTERRUPT_ACK, 4, mmio.INT_CONFIG)
    assert not t.irq.level
    assert t.read(mmio.SHM_LEN_LOW, 4) == 0xFFFFFFFF  # no shared memory regions
    t.write(mmio.STATUS, 4, 0)  # reset
    assert be.resets == 1 and not t.queues[0].ready and t.read(mmio.STATUS, 4) == 0


def test_backend_errors_do_not_escape():
    class Broken(Backend):
        def config_read(self, offset: int, size: int) -> int:
            raise IndexError("bug")

    t = VirtioMmioTransport(Broken())
    assert t.read(mmio.CONFIG + 0x40, 4) == 0
