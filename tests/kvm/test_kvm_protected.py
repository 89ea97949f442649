"""Guests started by the host in 32-bit protected mode (the PVH boot ABI's state),
and a PVH ELF loaded by vmforge.loader.pvh reading its hvm_start_info."""

from __future__ import annotations

from pathlib import Path

from vmforge.accel.kvm import VcpuExit
from vmforge.accel.kvm.x86 import CR0_PE, enter_protected_mode
from vmforge.loader.e820 import E820_RAM, E820_RESERVED, E820Entry
from vmforge.loader.pvh import load_pvh
from vmforge.testing.x86_elf import build_elf, pvh_source

from .conftest import ram

PROTECTED = """
        .code32
        .globl _start
_start: mov     %ebx, %eax
        out     %eax, $0x10
        mov     %esi, %eax
        out     %eax, $0x10
        .byte   0x40                    # inc %eax in 32-bit code (a REX prefix in 64-bit)
        out     %eax, $0x10
        movl    $0xdeadbeef, 0x1ffffc   # flat data segment: base 0, beyond 64 KiB
        mov     0x1ffffc, %eax
        out     %eax, $0x10
        mov     %cr0, %eax
        out     %eax, $0x10
        hlt
"""


class Collect:
    def __init__(self) -> None:
        self.values: list[int] = []

    def pio_out(self, port: int, size: int, value: int) -> None:
        assert port == 0x10 and size == 4
        self.values.append(value)


def test_enter_protected_mode(vm, kvm, guest) -> None:
    mem = ram(0x200000)
    mem.write(0x1000, guest(PROTECTED))
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    enter_protected_mode(vcpu, 0x1000, ebx=0x6000, esi=0x12345)
    s = vcpu.get_sregs()
    assert s.cr0 & 0x8000_0001 == CR0_PE and s.efer == 0
    assert (s.cs.db, s.cs.l, s.cs.base, s.cs.limit) == (1, 0, 0, 0xFFFFFFFF)
    cb = Collect()
    assert vcpu.run(cb) is VcpuExit.HLT
    assert cb.values[:4] == [0x6000, 0x12345, 0x12346, 0xDEADBEEF]
    assert cb.values[4] & 0x8000_0001 == 1                # PE on, paging off
    assert mem.read(0x1FFFFC, 4) == bytes.fromhex("efbeadde")


PVH_READER = """
        .text
        .code32
        .globl _start
_start: mov     0(%ebx), %eax           # magic
        out     %eax, $0x10
        mov     4(%ebx), %eax           # version
        out     %eax, $0x10
        mov     12(%ebx), %eax          # nr_modules
        out     %eax, $0x10
        mov     48(%ebx), %eax          # memmap_entries
        out     %eax, $0x10
        mov     40(%ebx), %edx          # memmap_paddr: the second entry's type
        mov     40(%edx), %eax
        out     %eax, $0x10
        mov     24(%ebx), %edx          # cmdline_paddr: its first four bytes
        mov     (%edx), %eax
        out     %eax, $0x10
        mov     16(%ebx), %edx          # modlist_paddr: the initrd's size and first bytes
        mov     8(%edx), %eax
        out     %eax, $0x10
        mov     (%edx), %edx
        mov     (%edx), %eax
        out     %eax, $0x10
        hlt
"""


def test_pvh_elf_reads_its_start_info(vm, kvm, tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".quad _start", body=PVH_READER), name="reader")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"INIT" + bytes(100))
    mem = ram(0x400000)
    e820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
            E820Entry(0x100000, 0x300000, E820_RAM)]
    boot = load_pvh(mem, str(elf), e820=e820, cmdline="root=/dev/vda", initrd=str(initrd))
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    enter_protected_mode(vcpu, boot.entry, ebx=boot.start_info)
    cb = Collect()
    assert vcpu.run(cb) is VcpuExit.HLT
    assert cb.values == [0x336EC578, 1, 1, 3, E820_RESERVED, int.from_bytes(b"root", "little"),
                         104, int.from_bytes(b"INIT", "little")]
