"""The records ``vmforge run`` builds a machine from are :mod:`vmforge.record`'s, not
dataclasses (start-up: ``tests/test_startup_imports.py``), and behave as the
dataclasses they were: constructor arguments and defaults, a fresh container per
instance for each defaulted list or dict, equality, hashing and frozenness, repr,
and dataclasses' own functions."""

from __future__ import annotations

import dataclasses

import pytest

from vmforge.clock import Icount
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig, MachineProp, NetdevSpec
from vmforge.debug.hooks import LAST, Hook
from vmforge.devspec import ChardevSpec
from vmforge.fdt import FdtPlacement
from vmforge.loader import ElfImage, ElfSymbol, LinuxImageHeader
from vmforge.memory import RamRegion, Region
from vmforge.pci.device import PciBar
from vmforge.record import FrozenRecord, Record

virt = pytest.importorskip("vmforge_riscv_virt")
from vmforge_riscv_virt.fdt_virt import Placed, VirtFdtConfig  # noqa: E402
from vmforge_riscv_virt.rom import FwDynamicInfo  # noqa: E402

#: each record class, its fields in order, and whether it is frozen
RECORDS = [
    (Icount, ("shift", "sleep"), True),
    (DriveSpec, ("file", "format", "interface", "readonly", "id", "options"), False),
    (DeviceSpec, ("driver", "props"), False),
    (NetdevSpec, ("type", "id", "options"), False),
    (MachineConfig, ("machine", "machine_props", "memory", "smp", "bios", "kernel", "initrd",
                     "append", "dtb", "drives", "devices", "netdevs", "chardevs", "globals",
                     "serial", "accel", "no_reboot", "trace", "icount", "extra"), False),
    (MachineProp, ("kind", "default", "doc", "min", "max", "choices"), True),
    (ChardevSpec, ("backend", "id", "options"), False),
    (FdtPlacement, ("base", "size", "irqs", "interrupt_parent"), True),
    (ElfSymbol, ("name", "value", "size", "type", "shndx"), True),
    (ElfImage, ("path", "entry", "machine", "segments", "symbols", "symbol_table"), False),
    (LinuxImageHeader, ("text_offset", "image_size", "flags", "version"), True),
    (RamRegion, ("base", "size", "name", "readonly", "buffer"), True),
    (Region, ("base", "size", "kind", "name", "ops"), True),
    (PciBar, ("index", "size", "type_bits", "ops", "name", "mapped_at"), False),
    (Hook, ("kind", "callback", "begin", "end", "once"), False),
    (Placed, ("device", "base", "size", "irqs"), True),
    (VirtFdtConfig, ("num_harts", "mem_base", "mem_size", "isa", "mmu_type", "bootargs",
                     "initrd", "stdout_path", "rng_seed", "extra_reserved"), False),
    (FwDynamicInfo, ("next_addr", "next_mode", "options", "boot_hart", "magic", "version"),
     True),
]


@pytest.mark.parametrize("cls,names,frozen", RECORDS, ids=[r[0].__name__ for r in RECORDS])
def test_run_records_are_plain_classes_with_dataclass_fields(cls, names, frozen) -> None:
    assert issubclass(cls, FrozenRecord if frozen else Record)
    assert "__dict__" not in dir(cls) and cls.__slots__ == names
    assert tuple(f.name for f in dataclasses.fields(cls)) == names


def test_machine_config_defaults_and_fresh_containers() -> None:
    a, b = MachineConfig(), MachineConfig()
    assert a == b and a.machine == "riscv-virt" and a.bios == "default" and a.smp == 1
    assert (a.memory, a.kernel, a.accel, a.icount, a.append, a.no_reboot) == (
        None, None, None, None, "", False)
    assert a.serial == ["stdio"] and a.drives == [] and a.extra == {}
    a.serial.append("null")
    a.extra["x"] = 1
    a.drives.append(DriveSpec("f"))
    assert b.serial == ["stdio"] and b.extra == {} and b.drives == []   # not shared
    assert a != b
    c = MachineConfig("m", smp=2, serial=[], extra={"cpu": "host"})
    assert (c.machine, c.smp, c.serial, c.extra) == ("m", 2, [], {"cpu": "host"})
    assert dataclasses.replace(c, smp=4).smp == 4
    with pytest.raises(AttributeError):
        c.other = 1                         # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        MachineConfig(nosuch=1)             # type: ignore[call-arg]


def test_specs_as_before() -> None:
    d = DriveSpec.parse("file=a.img,format=raw,if=none,readonly=on,id=d0,cache=none")
    assert d == DriveSpec("a.img", "raw", "none", True, "d0", {"cache": "none"})
    assert repr(DeviceSpec("virtio-blk", {"drive": "d0"})) == (
        "DeviceSpec(driver='virtio-blk', props={'drive': 'd0'})")
    assert DeviceSpec("x").props == {} and DeviceSpec("x").props is not DeviceSpec("x").props
    assert NetdevSpec.parse("user,id=n0") == NetdevSpec("user", "n0")
    assert ChardevSpec.parse("file,id=c0,path=p") == ChardevSpec("file", "c0", {"path": "p"})


def test_frozen_records_hash_and_refuse_assignment() -> None:
    i = Icount(3, sleep=False)
    assert i == Icount(shift=3, sleep=False) and hash(i) == hash(Icount(3, False))
    assert Icount() == Icount(0, True) and repr(i) == "Icount(shift=3, sleep=False)"
    with pytest.raises(AttributeError):
        i.shift = 1
    p = MachineProp(int, 5, "doc", min=1)
    assert (p.kind, p.default, p.doc, p.min, p.max, p.choices) == (int, 5, "doc", 1, None, ())
    assert len({p, MachineProp(int, 5, "doc", min=1)}) == 1
    info = FwDynamicInfo(0x80200000)
    assert info == FwDynamicInfo(0x80200000, 1, 0, 0) and info.pack()[:8] != bytes(8)
    assert FdtPlacement(0x1000, 0x100).irqs == () and Placed(None, 1, 2).irqs == ()


def test_hook_is_equal_to_itself_only() -> None:
    a, b = Hook("code", print), Hook("code", print)
    assert a == a and a != b and len({a, b}) == 2
    assert (a.begin, a.end, a.once) == (0, LAST, False)
    assert VirtFdtConfig().extra_reserved is not VirtFdtConfig().extra_reserved
    assert ElfImage("p", 1, 2).segments == [] and ElfImage("p", 1, 2) == ElfImage("p", 1, 2)


def test_memory_sizes_whole_and_fractional_as_qemu() -> None:
    """``-m``: a whole number is multiplied out, a fraction goes through
    :class:`fractions.Fraction`, rounded up to 8 KiB either way (as QEMU)."""
    import math
    from fractions import Fraction

    for text, number, unit in (("256", "256", 20), ("256M", "256", 20), ("7k", "7", 10),
                               ("3", "3", 20), ("1.5G", "1.5", 30), (".5K", ".5", 10),
                               ("0.001", "0.001", 20), ("2.T", "2.", 40)):
        exact = math.ceil(Fraction(number) * (1 << unit))
        assert MachineConfig.parse_memory(text) == -(-exact // 8192) * 8192, text
    assert MachineConfig.parse_memory("5B") == 8192


def test_records_take_weak_references_as_dataclasses_did() -> None:
    """``-blockdev`` keeps its drives in a WeakValueDictionary (vmforge.block.nodes)."""
    import weakref

    drive = DriveSpec("disk.qcow2", "qcow2")
    assert weakref.ref(drive)() is drive
    held = weakref.WeakValueDictionary({1: drive})
    assert held[1] is drive
    frozen = Icount(0, False)
    assert weakref.ref(frozen)() is frozen
