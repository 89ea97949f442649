"""The virtio-pci transport: QEMU's configuration space, the capability walk, whole
requests driven the way Linux's virtio_pci_modern / virtio_pci_legacy drive them,
INTx and MSI-X, resets and saved state."""

from __future__ import annotations

import pytest
from pcikit import PCIE_IRQ

from vmforge.device import DeviceError
from vmforge.pci import regs
from vmforge.pci.guest import VirtioPciDriver, assign_bars
from vmforge.testing.virtio_driver import GuestAllocator
from vmforge.testing.virtio_kit import EchoDevice
from vmforge.virtio import StateError, spec
from vmforge.virtio import pci as vpci
from vmforge.virtio.pci import VirtioPciTransport, VirtioRngPci
from vmforge_virtio.blk import VirtioBlk
from vmforge_virtio.rng import VirtioRng


class LegacyEcho(EchoDevice):
    """The echo device under a device id that has a transitional PCI id (4)."""

    name = "virtio-echo-legacy-test"
    device_id = spec.VIRTIO_ID_RNG


SLOT = 1
INTA_LINE = PCIE_IRQ + (0 + SLOT) % 4  # slot 1, INTA


def plug(rig, device, slot=SLOT, legacy_driver=False, **props):
    t = rig.bus.plug(VirtioPciTransport(device, **props), slot=slot)
    bars = assign_bars(rig.ecam, slot, 0, **rig.windows())
    drv = VirtioPciDriver(rig.space, rig.space.memory, rig.ecam, slot, bars,
                          pio_base=0x0300_0000, legacy=legacy_driver,
                          alloc=GuestAllocator(0x8000_0000 + 0x10_0000 * slot, 0x10_0000))
    return t, drv


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 2048)  # 512 KiB
    return path


@pytest.mark.parametrize("props, qemu_props", [
    ({}, ""),
    ({"disable_legacy": "on"}, ",disable-legacy=on"),
    ({"disable_modern": True}, ",disable-modern=on"),
    ({"vectors": 5}, ",vectors=5"),
    ({"vectors": 0}, ",vectors=0"),
], ids=["transitional", "modern", "legacy", "vectors5", "no-msix"])
def test_rng_config_space_is_qemus(qemu, rig, props, qemu_props):
    theirs = qemu.config_spaces(2, "-device", "virtio-rng-pci" + qemu_props)
    rig.bus.plug(VirtioPciTransport(VirtioRng(), **props), slot=SLOT)
    for slot in (0, SLOT):
        ours = b"".join(rig.ecam.read(slot, 0, r).to_bytes(4, "little")
                        for r in range(0, 256, 4))
        assert ours == theirs[slot], f"slot {slot}"


def test_blk_config_space_is_qemus(qemu, rig, disk):
    theirs = qemu.config_spaces(2, "-drive", f"if=none,id=d0,file={disk},format=raw",
                                "-device", "virtio-blk-pci,drive=d0")
    rig.bus.plug(VirtioPciTransport(VirtioBlk(drive=str(disk), format="raw")), slot=SLOT)
    ours = b"".join(rig.ecam.read(SLOT, 0, r).to_bytes(4, "little") for r in range(0, 256, 4))
    assert ours == theirs[SLOT]


def test_capability_walk_as_linux(rig):
    _, drv = plug(rig, VirtioRng())
    caps = drv.caps
    assert sorted(caps) == [1, 2, 3, 4, 5]
    layout = {k: (c["bar"], c["offset"], c["length"]) for k, c in caps.items()}
    assert layout == {1: (4, 0x0000, 0x1000), 3: (4, 0x1000, 0x1000), 4: (4, 0x2000, 0x1000),
                      2: (4, 0x3000, 0x1000), 5: (0, 0, 0)}
    assert caps[2]["multiplier"] == 4
    assert rig.ecam.capabilities(SLOT) == [(0x98, regs.CAP_ID_MSIX), (0x84, 9), (0x70, 9),
                                           (0x60, 9), (0x50, 9), (0x40, 9)]
    assert drv.bars[4].is_64 and drv.bars[4].prefetch and drv.bars[4].size == 0x4000
    assert drv.bars[0].io and drv.bars[0].size == 0x20
    assert not drv.legacy


def test_rng_request_modern_with_intx(rig):
    t, drv = plug(rig, VirtioRng())
    [q] = drv.setup()
    assert t.dev.status == (spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER
                            | spec.STATUS_FEATURES_OK | spec.STATUS_DRIVER_OK)
    assert drv.features >> spec.VIRTIO_F_VERSION_1 & 1 and not t.dev.legacy
    assert drv.common("num_queues") == 1
    q.add_sgs([], [48])
    assert q.kick()
    assert rig.levels.get(INTA_LINE) is True
    assert rig.ecam.read(SLOT, 0, regs.STATUS, 2) & regs.STATUS_INTERRUPT
    assert drv.read_isr() == vpci.ISR_QUEUE
    assert rig.levels[INTA_LINE] is False and drv.read_isr() == 0  # read cleared it
    req = q.get_buf()
    assert req.written == 48 and len(set(req.data())) > 8


def test_blk_write_then_read_modern(rig, disk):
    t, drv = plug(rig, VirtioBlk(drive=str(disk), format="raw"))
    [q] = drv.setup()
    assert drv.config(0, 8) == 1024  # capacity in sectors
    payload = bytes(range(7, 7 + 200)) * 5 + bytes(24)
    header = (1).to_bytes(4, "little") + bytes(4) + (3).to_bytes(8, "little")  # OUT sector 3
    q.add_sgs([header, payload], [1])
    q.kick()
    assert rig.loop.run_until(lambda: q.used_idx != q.last_used, timeout=10)
    assert rig.levels[INTA_LINE] and drv.read_isr() == vpci.ISR_QUEUE
    [req] = q.drain()
    assert req.data() == b"\x00"
    header = bytes(8) + (3).to_bytes(8, "little")  # IN sector 3
    q.add_sgs([header], [1024, 1])
    q.kick()
    assert rig.loop.run_until(lambda: q.used_idx != q.last_used, timeout=10)
    [req] = q.drain()
    assert req.data() == payload + b"\x00"
    assert disk.read_bytes()[3 * 512:3 * 512 + 1024] == payload
    t.dev.unrealize()


@pytest.mark.parametrize("props, legacy_driver", [({"disable_modern": True}, False),
                                                  ({}, True)], ids=["legacy-only", "transitional"])
def test_legacy_driver_request(rig, props, legacy_driver):
    t, drv = plug(rig, LegacyEcho(), legacy_driver=legacy_driver, **props)
    assert drv.legacy
    queues = drv.setup()
    assert t.dev.legacy
    assert not drv.features >> spec.VIRTIO_F_VERSION_1 & 1  # 32 bits only
    assert drv.features >> spec.VIRTIO_F_ANY_LAYOUT & 1
    assert drv.config(0, 4) == int.from_bytes(b"ECHO", "little")  # config at 20
    q = queues[0]
    q.add_sgs([b"hello"], [5])
    q.kick()
    assert drv.read_isr() == vpci.ISR_QUEUE
    assert q.get_buf().data() == b"olleh"
    # a zero PFN resets the device, as QEMU
    drv.legacy_reg("q_pfn", 0)
    assert t.dev.status == 0 and not t.dev.queues[0].ready


def test_transitional_device_goes_back_to_modern_after_reset(rig):
    t, drv = plug(rig, LegacyEcho(), legacy_driver=True)
    drv.setup()
    assert t.dev.legacy
    modern = VirtioPciDriver(rig.space, rig.space.memory, rig.ecam, SLOT, drv.bars,
                             pio_base=0x0300_0000, alloc=drv.alloc)
    [q, _] = modern.setup()
    assert not t.dev.legacy and t.dev.has_feature(spec.VIRTIO_F_VERSION_1)
    q.add_sgs([b"abc"], [3])
    q.kick()
    assert q.get_buf().data() == b"cba"


def test_msix_vectors_and_messages(msi_rig):
    rig = msi_rig
    t, drv = plug(rig, EchoDevice())  # 2 queues: 3 vectors
    assert t.nvectors == 3
    queues = drv.setup(vectors=True)
    assert drv.common("msix_config") == 0
    for i in range(2):
        drv.common("q_select", i)
        assert drv.common("q_msix") == i + 1
    drv.common("q_select", 1)
    drv.common("q_msix", 3)  # beyond the table
    assert drv.common("q_msix") == vpci.NO_VECTOR
    drv.common("q_msix", 2)
    # program the table: vector v -> address 0xfee00000 + v, data 0x100 + v
    table = drv.bars[1].address
    for v in range(3):
        rig.space.write(table + 16 * v, 4, 0xFEE0_0000 + 16 * v)
        rig.space.write(table + 16 * v + 8, 4, 0x100 + v)
        rig.space.write(table + 16 * v + 12, 4, 0)
    cap = t.find_capability(regs.CAP_ID_MSIX)
    rig.ecam.write(SLOT, 0, cap + 2, 2, regs.MSIX_FLAGS_ENABLE)
    queues[1].add_sgs([b"xy"], [2])
    queues[1].kick()
    assert rig.messages == [(0xFEE0_0020, 0x102)]
    assert not any(rig.levels.values())  # no INTx with MSI-X on
    t.dev.config_changed()
    assert rig.messages[-1] == (0xFEE0_0000, 0x100)
    # legacy view: the vectors sit at 20/22 and the config moves to 24 while MSI-X is on
    assert t.legacy_read(vpci.L_MSI_CONFIG_VECTOR, 2) == 0
    assert t.legacy_config_offset == 24
    drv.status(0)
    assert drv.common("msix_config") == vpci.NO_VECTOR


def test_config_change_interrupt_only_after_driver_ok(rig):
    t, drv = plug(rig, EchoDevice())
    drv.negotiate()
    t.dev.config_changed()
    assert t.isr == 0 and not rig.levels.get(INTA_LINE)
    generation = drv.common("generation")
    drv.setup()
    t.dev.config_changed()
    assert rig.levels[INTA_LINE] is True
    assert drv.read_isr() == vpci.ISR_QUEUE | vpci.ISR_CONFIG
    assert drv.common("generation") == (generation + 1) & 0xFF


def test_common_cfg_guards(rig):
    t, drv = plug(rig, EchoDevice())
    drv.setup()
    drv.common("q_select", 5)  # no such queue
    assert drv.common("q_size") == 0 and drv.common("q_enable") == 0
    assert drv.common("q_notify_off") == 5
    drv.common("q_select", 0)
    desc = drv.common("q_desc")
    drv.common("q_desc", 0x1234_0000)  # a live queue keeps its rings
    assert drv.common("q_desc") == desc
    drv.common("dfselect", 2)
    assert drv.common("df") == 0
    assert drv.config(0x100, 4) == 0xFFFFFFFF  # past the device config
    drv.common("q_enable", 0)  # only 1 may be written
    assert t.dev.broken and t.dev.status & spec.STATUS_DEVICE_NEEDS_RESET


def test_pci_cfg_capability_reaches_the_modern_bar(rig):
    t, drv = plug(rig, EchoDevice())
    cfg = drv.caps[vpci.CAP_PCI_CFG]["pos"]
    e = rig.ecam
    e.write(SLOT, 0, cfg + vpci.CAP_OFFSET, 4, vpci.NUM_QUEUES)
    e.write(SLOT, 0, cfg + vpci.CAP_LENGTH, 4, 2)
    assert e.read(SLOT, 0, cfg + vpci.PCI_CFG_DATA, 2) == 2
    e.write(SLOT, 0, cfg + vpci.CAP_OFFSET, 4, vpci.Q_SELECT)
    e.write(SLOT, 0, cfg + vpci.PCI_CFG_DATA, 2, 1)
    assert t.queue_sel == 1


def test_system_reset_clears_function_and_device(rig):
    t, drv = plug(rig, VirtioRng())
    drv.setup()
    rig.host.reset()
    assert t.dev.status == 0 and not t.dev.queues[0].ready
    assert rig.ecam.read(SLOT, 0, regs.COMMAND, 2) == 0
    assert rig.bus.mem_space.regions() == []


def test_state_round_trip_with_a_pending_buffer(rig):
    t, drv = plug(rig, EchoDevice())
    q, _ = drv.setup()
    q.add_sgs([b"saved"], [5])  # available, not yet kicked
    saved = rig.host.save_state()
    rig.host.reset()
    assert rig.bus.mem_space.regions() == []
    rig.host.load_state(saved)
    assert t.dev.driver_ok and t.dev.queues[0].ready
    assert [r.base for r in rig.bus.mem_space.regions()] == [drv.bars[1].address,
                                                             drv.bars[4].address]
    q.kick()
    assert q.get_buf().data() == b"devas"
    record = t.save_state()
    bad = dict(record, queue_vectors=[0])
    with pytest.raises(StateError, match="queue_vectors"):
        t.load_state(bad)
    bad = dict(record, isr=8)
    with pytest.raises(StateError, match="isr"):
        t.load_state(bad)
    other = VirtioPciTransport(VirtioRng(), disable_legacy="on")
    with pytest.raises(StateError, match="read-only"):
        other.load_state(record)  # another device id: refused, nothing applied
    assert other.dev.status == 0


def test_wrappers_take_the_device_properties():
    t = VirtioRngPci(max_bytes=16, disable_legacy="on", vectors=0)
    assert t.dev.max_bytes == 16 and t.msix is None
    assert t.config_read(regs.DEVICE_ID, 2) == 0x1044
    props = VirtioRngPci.properties()
    assert {"max_bytes", "disable_legacy", "disable_modern", "vectors", "addr"} <= set(props)
    with pytest.raises(DeviceError, match="no property"):
        VirtioRngPci(no_such_thing=1)
    with pytest.raises(DeviceError, match="leave nothing"):
        VirtioRngPci(disable_legacy="on", disable_modern=True)
    with pytest.raises(DeviceError):
        VirtioPciTransport(EchoDevice(), disable_legacy="off")  # no legacy id for 0x7e
    assert VirtioPciTransport(EchoDevice()).config_read(regs.DEVICE_ID, 2) == 0x1040 + 0x7E


def test_wrappers_are_registered_devices():
    from vmforge.plugins import registry

    names = registry().names("device")
    for name in ("virtio-blk-pci", "virtio-rng-pci", "virtio-net-pci"):
        assert name in names
    assert registry().load("device", "virtio-rng-pci") is VirtioRngPci


@pytest.mark.parametrize("seed", range(4))
def test_hostile_config_and_bar_writes_break_nothing(rig, seed):
    import random

    rnd = random.Random(seed)
    t, drv = plug(rig, LegacyEcho())
    drv.setup()
    ident = rig.ecam.read(SLOT, 0, 0)
    bar_ranges = [(drv.bar_cpu_address(i), b.size) for i, b in drv.bars.items()]
    for _ in range(3000):
        size = rnd.choice((1, 2, 4))
        if rnd.random() < 0.5:
            reg = rnd.randrange(0, 0x1000) & ~(size - 1)
            value = rnd.choice((0, 0xFFFFFFFF, rnd.getrandbits(32)))
            rig.ecam.write(SLOT, 0, reg, size, value & ((1 << (8 * size)) - 1))
            rig.ecam.read(SLOT, 0, reg & ~3)
        else:
            base, length = rnd.choice(bar_ranges)
            addr = base + (rnd.randrange(length) & ~(size - 1))
            if rnd.random() < 0.5:
                rig.space.read(addr, size)
            else:
                rig.space.write(addr, size, rnd.getrandbits(8 * size))
        rig.loop.run()
    assert rig.ecam.read(SLOT, 0, 0) == ident
    assert [c for _, c in rig.ecam.capabilities(SLOT)] == [regs.CAP_ID_MSIX, 9, 9, 9, 9, 9]
    rig.host.reset()  # and the function comes back to its power-on state
    assert t.dev.status == 0 and rig.bus.mem_space.regions() == []
    assert sum(rig.bus.irq_count) == 0 and not any(rig.levels.values())
