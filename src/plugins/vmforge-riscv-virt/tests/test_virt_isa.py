"""The virt tree's ``riscv,isa``: QEMU 7.2's default CPU string, in its order,
less what vmforge's hart does not implement (H)."""

from __future__ import annotations

from vmforge.fdt import parse_dtb
from vmforge_riscv_virt.fdt_virt import DEFAULT_ISA

NOT_HERE = ("h",)


def without(isa: str, names: tuple[str, ...]) -> str:
    base, *multi = isa.split("_")
    for letter in (n for n in names if len(n) == 1):
        base = base[:4] + base[4:].replace(letter, "")
    return "_".join([base, *(m for m in multi if m not in names)])


def test_isa_is_qemus_less_what_vmforge_lacks(qemu):
    tree = parse_dtb(qemu.dumpdtb(1, "256M"))
    cpu = next(n for n in tree.root.walk() if n.path == "/cpus/cpu@0")
    theirs = cpu.props["riscv,isa"].rstrip(b"\0").decode()
    assert "zba_zbb_zbc_zbs" in theirs and "sstc" in theirs
    assert DEFAULT_ISA == without(theirs, NOT_HERE)
