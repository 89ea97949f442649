"""Tiny guests for the KVM layer's tests, assembled with GNU as at test time.

Every test here skips, saying why, when ``/dev/kvm`` is absent or not
accessible; nothing else makes them skip (binutils comes with the build tools).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmforge.accel.kvm import Kvm, Vm, kvm_available
from vmforge.memory import GuestMemory
from vmforge.testing.oracles import oracle_missing

GUESTS = Path(__file__).resolve().parent / "guests"

_why = kvm_available()
if _why is not None:
    oracle_missing(_why)


def assemble(source: str | Path, base: int, out_dir: Path) -> bytes:
    """Assemble ``source`` (a file in ``guests/`` or assembler text) linked at ``base``
    into a flat binary."""
    if isinstance(source, Path) or source.endswith(".S"):
        src = GUESTS / source
        name = Path(source).stem
    else:
        name = f"inline{abs(hash(source)) & 0xFFFFFF:x}"
        src = out_dir / f"{name}.S"
        src.write_text(source)
    obj = out_dir / f"{name}-{base:x}.o"
    binary = out_dir / f"{name}-{base:x}.bin"
    subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
    subprocess.run(["ld", "-m", "elf_x86_64", "-N", f"-Ttext={base:#x}", "-e", "_start",
                    "--oformat=binary", "-o", str(binary), str(obj)], check=True)
    return binary.read_bytes()


@pytest.fixture(scope="session")
def guest(tmp_path_factory) -> Callable[[str, int], bytes]:
    out = tmp_path_factory.mktemp("kvm-guests")
    cache: dict[tuple[str, int], bytes] = {}

    def build(source: str, base: int = 0x1000) -> bytes:
        if (source, base) not in cache:
            cache[(source, base)] = assemble(source, base, out)
        return cache[(source, base)]

    return build


@pytest.fixture
def kvm() -> Iterator[Kvm]:
    with Kvm() as k:
        yield k


@pytest.fixture
def vm(kvm: Kvm) -> Iterator[Vm]:
    with kvm.create_vm() as v:
        yield v


def ram(size: int = 0x10000, base: int = 0) -> GuestMemory:
    mem = GuestMemory()
    mem.add_ram(base, size)
    return mem


def boot_user64(vm: Vm, kvm: Kvm, code: bytes, regs=None):
    """``code`` at 0x1000 entered by the host in 64-bit mode at CPL3 (IOPL 3), 2 MiB of
    RAM mapped 1:1 by page tables at 0x10000; returns (vcpu, mem)."""
    from vmforge.accel.kvm.x86 import enter_long_mode, identity_page_tables

    mem = ram(0x200000)
    mem.write(0x1000, code)
    cr3 = identity_page_tables(mem, 0x10000)
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    enter_long_mode(vcpu, cr3, rip=0x1000, rsp=0x9000, user=True, regs=regs)
    return vcpu, mem
