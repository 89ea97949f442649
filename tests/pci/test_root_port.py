"""``pcie-root-port``: its configuration space byte for byte against QEMU 7.2's (read
through QEMU's ECAM on a stopped ``virt``), configuration cycles routed to the bus
behind it, INTx through it, and the hot-plug slot driven the way Linux's pciehp
drives it (events, power control, attention button, the guest letting go)."""

from __future__ import annotations

import subprocess

import pytest
from pcikit import ECAM, PCIE_IRQ, Nic, Qemu, Rig

from vmforge.pci import hotplug, regs
from vmforge.pci.bridge import BRIDGE_CONTROL, BRIDGE_CTL_BUS_RESET, SECONDARY_BUS
from vmforge.pci.root_port import (
    EXP_SLTCTL,
    EXP_SLTSTA,
    SLTCTL_ABPE,
    SLTCTL_CCIE,
    SLTCTL_HPIE,
    SLTCTL_PCC,
    SLTCTL_PDCE,
    SLTCTL_PIC_OFF,
    SLTCTL_PIC_ON,
    SLTSTA_ABP,
    SLTSTA_CC,
    SLTSTA_PDC,
    SLTSTA_PDS,
    PcieRootPort,
)

RP_SLOT = 1            # QEMU puts the first -device at 00:01.0, as the rig here


def qemu_config_4k(qemu: Qemu, *args: str) -> bytes:
    """The whole 4 KiB configuration space of 00:01.0 on QEMU's stopped ``virt``."""
    base = ECAM + (RP_SLOT << 15)
    cmds = "".join(f"xp /64wx {base + off:#x}\n" for off in range(0, 4096, 256)) + "quit\n"
    res = subprocess.run([qemu.binary, "-M", "virt", "-m", "256M", "-bios", "none",
                          "-display", "none", "-serial", "none", "-nodefaults", "-S",
                          "-monitor", "stdio", *args], input=cmds, capture_output=True,
                         text=True, timeout=60, check=True)
    words: list[int] = []
    for line in res.stdout.replace("\r", "").splitlines():
        head, sep, rest = line.partition(": ")
        if sep and head.strip().startswith("00"):
            words += [int(w, 16) for w in rest.split()]
    data = b"".join(w.to_bytes(4, "little") for w in words)
    assert len(data) == 4096
    return data


def ecam_config_4k(rig: Rig) -> bytes:
    return b"".join(rig.ecam.read(RP_SLOT, 0, off, 4).to_bytes(4, "little")
                    for off in range(0, 4096, 4))


def _differences(mine: bytes, theirs: bytes) -> list[str]:
    return [f"{i:#05x}: {mine[i]:02x} vs QEMU {theirs[i]:02x}"
            for i in range(len(theirs)) if mine[i] != theirs[i]]


@pytest.mark.parametrize("props", [{"chassis": 1, "slot": 0},
                                   {"chassis": 3, "slot": 5, "port": 7},
                                   {"chassis": 2, "hotplug": False}])
def test_config_space_matches_qemu(rig: Rig, qemu: Qemu, props: dict[str, object]) -> None:
    text = ",".join(f"{k}={'off' if v is False else v}" for k, v in props.items())
    theirs = qemu_config_4k(qemu, "-device", f"pcie-root-port,id=rp0,{text}")
    port = PcieRootPort(**props)
    rig.bus.plug(port, slot=RP_SLOT)
    port.reset()
    assert _differences(ecam_config_4k(rig), theirs) == []


def test_populated_slot_matches_qemu(rig: Rig, qemu: Qemu) -> None:
    """A function given at start: presence detected, link up, slot powered, no event
    (QEMU's conventional pci-testdev behind it: the link status is the port's own)."""
    theirs = qemu_config_4k(qemu, "-device", "pcie-root-port,id=rp0,chassis=1",
                            "-device", "pci-testdev,bus=rp0")
    port = PcieRootPort(chassis=1)
    rig.bus.plug(port, slot=RP_SLOT)
    port.cold_plug(Nic())
    port.reset()
    assert _differences(ecam_config_4k(rig), theirs) == []


def _port_with_buses(rig: Rig, **props: object) -> PcieRootPort:
    port = PcieRootPort(chassis=1, **props)
    rig.bus.plug(port, slot=RP_SLOT)
    port.reset()
    rig.ecam.write(RP_SLOT, 0, 0x18, 4, 0x00_02_01_00)    # primary 0, secondary 1, sub 2
    return port


def test_config_cycles_reach_the_bus_behind(rig: Rig) -> None:
    port = PcieRootPort(chassis=1)
    rig.bus.plug(port, slot=RP_SLOT)
    port.reset()
    nic = Nic()
    port.cold_plug(nic)
    port.reset()
    assert rig.ecam.read(0, 0, 0, 4, bus=1) == 0xFFFFFFFF       # no bus 1 yet
    rig.ecam.write(RP_SLOT, 0, 0x18, 4, 0x00_01_01_00)
    assert port.config[SECONDARY_BUS] == 1
    assert rig.ecam.read(0, 0, regs.VENDOR_ID, 4, bus=1) == nic.device_id << 16 | nic.vendor_id
    assert rig.ecam.read(1, 0, regs.VENDOR_ID, 4, bus=1) == 0xFFFFFFFF   # only device 0
    assert rig.ecam.read(0, 0, 0, 4, bus=2) == 0xFFFFFFFF       # beyond subordinate
    rig.ecam.write(0, 0, regs.COMMAND, 2, regs.COMMAND_MEMORY, bus=1)
    assert nic.command == regs.COMMAND_MEMORY
    # INTx of the function behind: its pin, swizzled at the port's slot (pin A of 00:01)
    nic.set_irq(True)
    assert rig.levels[PCIE_IRQ + regs.swizzle(RP_SLOT, 0)] is True
    nic.set_irq(False)
    assert rig.levels[PCIE_IRQ + regs.swizzle(RP_SLOT, 0)] is False
    # a secondary bus reset resets the function behind
    rig.ecam.write(RP_SLOT, 0, BRIDGE_CONTROL, 2, BRIDGE_CTL_BUS_RESET)
    assert nic.command == 0


def _slot(rig: Rig, reg: int) -> int:
    exp = 0x54
    return rig.ecam.read(RP_SLOT, 0, exp + reg, 2)


def _ack(rig: Rig) -> None:
    """Write back the events that are set (Linux's pciehp_isr)."""
    events = _slot(rig, EXP_SLTSTA) & (SLTSTA_ABP | SLTSTA_PDC | SLTSTA_CC)
    rig.ecam.write(RP_SLOT, 0, 0x54 + EXP_SLTSTA, 2, events)


def _set_slot_control(rig: Rig, value: int) -> None:
    rig.ecam.write(RP_SLOT, 0, 0x54 + EXP_SLTCTL, 2, value)


def test_hot_plug_and_unplug_as_pciehp_does(rig: Rig) -> None:
    port = _port_with_buses(rig)
    line = PCIE_IRQ + regs.swizzle(RP_SLOT, 0)
    gone: list[object] = []
    port.on_unplugged = gone.append
    enables = SLTCTL_HPIE | SLTCTL_ABPE | SLTCTL_PDCE | SLTCTL_CCIE
    _set_slot_control(rig, enables | SLTCTL_PCC | SLTCTL_PIC_OFF | 0xC0)
    _ack(rig)                                          # what pciehp's handler does
    assert not rig.levels.get(line)
    nic = Nic()
    port.hot_plug(nic)
    assert _slot(rig, EXP_SLTSTA) & (SLTSTA_PDS | SLTSTA_PDC | SLTSTA_ABP) == (
        SLTSTA_PDS | SLTSTA_PDC | SLTSTA_ABP)
    assert rig.levels[line] is True                        # the hot-plug interrupt
    assert rig.ecam.read(0, 0, 0, 4, bus=1) == 0xFFFFFFFF   # slot not powered yet
    rig.ecam.write(RP_SLOT, 0, 0x54 + EXP_SLTSTA, 2, SLTSTA_PDC | SLTSTA_ABP)
    assert rig.levels[line] is False
    _set_slot_control(rig, enables | SLTCTL_PIC_ON | 0xC0)      # power on
    assert _slot(rig, EXP_SLTSTA) & SLTSTA_CC                   # command completed
    assert rig.ecam.read(0, 0, 0, 2, bus=1) == nic.vendor_id
    rig.ecam.write(RP_SLOT, 0, 0x54 + EXP_SLTSTA, 2, SLTSTA_CC)
    # device_del: the attention button; nothing goes until the guest powers off
    assert port.unplug_request(nic) is False
    assert _slot(rig, EXP_SLTSTA) & SLTSTA_ABP and rig.levels[line] is True
    assert gone == [] and port.occupant is nic
    rig.ecam.write(RP_SLOT, 0, 0x54 + EXP_SLTSTA, 2, SLTSTA_ABP)
    _set_slot_control(rig, enables | SLTCTL_PCC | SLTCTL_PIC_OFF | 0xC0)   # power off
    assert gone == [nic] and port.occupant is None and not nic.realized
    assert not _slot(rig, EXP_SLTSTA) & SLTSTA_PDS
    assert _slot(rig, EXP_SLTSTA) & SLTSTA_PDC
    assert rig.ecam.read(0, 0, 0, 4, bus=1) == 0xFFFFFFFF
    port.hot_plug(Nic())                                         # the slot takes another


def test_unplug_of_an_unpowered_slot_is_immediate(rig: Rig) -> None:
    port = _port_with_buses(rig)
    gone: list[object] = []
    port.on_unplugged = gone.append
    nic = Nic()
    port.hot_plug(nic)                  # no guest: the slot stays powered off
    assert port.unplug_request(nic) is True
    assert gone == [nic] and port.occupant is None
    assert not _slot(rig, EXP_SLTSTA) & (SLTSTA_PDS | SLTSTA_ABP)


def test_refusals_in_qemus_words(rig: Rig) -> None:
    port = _port_with_buses(rig)
    port.qdev_id = "rp0"
    port.secondary.name = "rp0"
    port.hot_plug(Nic())
    with pytest.raises(hotplug.PlugError, match=r"^PCI: slot 0 function 0 not available for "
                       r"test-nic, in use by test-nic,id=$"):
        hotplug.plug_pci(rig.bus, Nic(addr="0"), "rp0", hotplugged=True)
    second = Nic()                      # no addr=: the next free slot, as QEMU 7.2
    hotplug.plug_pci(rig.bus, second, "rp0", hotplugged=True)
    assert second.devfn == regs.devfn(1)
    with pytest.raises(hotplug.PlugError, match=r"^Bus 'nobus' not found$"):
        hotplug.plug_pci(rig.bus, Nic(), "nobus", hotplugged=True)
    with pytest.raises(hotplug.PlugError,
                       match=r"^Bus 'pcie.0' does not support hotplugging$"):
        hotplug.plug_pci(rig.bus, Nic(), None, hotplugged=True)
    fixed = PcieRootPort(chassis=2, hotplug=False)
    fixed.qdev_id = "rp1"
    rig.bus.plug(fixed, slot=2)
    fixed.secondary.name = "rp1"
    with pytest.raises(hotplug.PlugError,
                       match=r"^Hot-plug failed: unsupported by the port device 'rp1'$"):
        hotplug.plug_pci(rig.bus, Nic(), "rp1", hotplugged=True)
