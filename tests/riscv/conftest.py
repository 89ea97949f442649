"""Fixtures for the RISC-V hart tests: test programs built with riscv64-unknown-elf-gcc.

Sources live in ``progs/``; they are assembled (and linked at 0x8000_0000 with
``progs/link.ld``) once per session into ``~/.cache/vmforge/riscv-tests/<hash>``,
where the hash covers every source and the compiler's version, so an edit
rebuilds and nothing is written into the repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmforge.accel.interp import RiscvHart
from vmforge.memory import AddressSpace
from vmforge.testing.oracles import require_program

# the random-program generator (rv_randprog.py) is a plain module next to the tests
sys.path.insert(0, str(Path(__file__).parent))

PROGS = Path(__file__).parent / "progs"
CC = "riscv64-unknown-elf-gcc"
OBJCOPY = "riscv64-unknown-elf-objcopy"
RAM_BASE = 0x8000_0000
RAM_SIZE = 32 << 20
TEST_DEV = 0x10_0000        # SiFive test device: 0x5555 pass, (code << 16) | 0x3333 fail


class ProgramExit(Exception):
    """The program wrote the test device."""

    def __init__(self, value: int) -> None:
        super().__init__(f"test device write {value:#x}")
        self.value = value


class TestDevice:
    valid_sizes = (4, 4)

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        raise ProgramExit(value)


class Builder:
    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def build(self, name: str, march: str = "rv64gc", extra: tuple[str, ...] = ()) -> Path:
        """``progs/<name>.S`` or ``.c`` -> flat binary at RAM_BASE; returns its path."""
        out = self.cache / f"{name}-{march}.bin"
        if out.exists():
            return out
        srcs = [p for p in (PROGS / f"{name}.S", PROGS / f"{name}.c") if p.exists()]
        if not srcs:
            raise FileNotFoundError(f"no source for test program {name!r}")
        elf = out.with_suffix(".elf")
        cmd = [CC, f"-march={march}", "-mabi=lp64d" if "d" in march[4:] or "g" in march
               else "-mabi=lp64", "-mcmodel=medany", "-nostdlib", "-nostartfiles",
               "-ffreestanding", "-fno-builtin", "-O2", "-ffp-contract=off", "-fno-math-errno",
               "-I", str(PROGS),
               "-T", str(PROGS / "link.ld"), *extra, "-o", str(elf)]
        if srcs[0].suffix == ".c":
            cmd.append(str(PROGS / "crt.S"))
        cmd += [str(s) for s in srcs]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building {name} failed:\n{done.stderr}")
        subprocess.run([OBJCOPY, "-O", "binary", str(elf), str(out)], check=True)
        return out


@pytest.fixture(autouse=True)
def _compile_at_the_32nd_jump():
    """These tests were written for a compiled tier that compiles a record at its 32nd
    taken jump (their loops run 40-100 trips to reach compiled code); the default
    threshold is higher (riscv_jit.pxi, JIT_HOT), tuned for a Linux boot."""
    from vmforge._fast.riscv import _jit_set_hot

    old = _jit_set_hot(32)
    yield
    _jit_set_hot(old)


@pytest.fixture(scope="session")
def rv_build() -> Builder:
    for tool in (CC, OBJCOPY):
        require_program(tool, "gcc-riscv64-unknown-elf")
    h = hashlib.sha256()
    for p in sorted(PROGS.iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    h.update(subprocess.run([CC, "--version"], capture_output=True).stdout)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = cache / "vmforge" / "riscv-tests" / h.hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    return Builder(cache)


@dataclass
class Outcome:
    hart: RiscvHart
    exit: int | None


def make_machine(image: bytes) -> tuple[AddressSpace, RiscvHart]:
    space = AddressSpace()
    space.add_ram(RAM_BASE, RAM_SIZE)
    space.add_mmio(TEST_DEV, TestDevice(), 0x1000)
    space.memory.load(RAM_BASE, image)
    return space, RiscvHart(space, pc=RAM_BASE)


def run_image(image: bytes, budget: int = 50_000_000) -> Outcome:
    _space, hart = make_machine(image)
    try:
        hart.run(budget)
    except ProgramExit as e:
        return Outcome(hart, e.value)
    return Outcome(hart, None)


@pytest.fixture(scope="session")
def run_prog(rv_build):
    """``run_prog(name)`` builds and runs a test program; asserts it passed."""

    def run(name: str, march: str = "rv64gc", budget: int = 50_000_000) -> Outcome:
        out = run_image(rv_build.build(name, march).read_bytes(), budget)
        if out.exit != 0x5555:
            h = out.hart
            detail = (f"test case {h.x[3]} failed (exit {out.exit!r}); pc={h.pc:#x} "
                      f"mcause={h.csr('mcause'):#x} mepc={h.csr('mepc'):#x} "
                      f"mtval={h.csr('mtval'):#x} a0={h.x[10]:#x} t6={h.x[31]:#x}")
            pytest.fail(f"{name}: {detail}")
        return out

    return run


@pytest.fixture(scope="session")
def rv_asm(rv_build):
    """``rv_asm(source)`` -> (image bytes, {label: address}) for a snippet at RAM_BASE."""
    cache: dict[str, tuple[bytes, dict[str, int]]] = {}

    def asm(source: str) -> tuple[bytes, dict[str, int]]:
        if source in cache:
            return cache[source]
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        d = rv_build.cache / "snippets"
        d.mkdir(exist_ok=True)
        src = d / f"{key}.S"
        elf = d / f"{key}.elf"
        binf = d / f"{key}.bin"
        if not binf.exists():
            src.write_text(".section .text.init\n.globl _start\n_start:\n" + source + "\n")
            done = subprocess.run([CC, "-march=rv64gc", "-mabi=lp64d", "-nostdlib",
                                   "-nostartfiles", "-T", str(PROGS / "link.ld"),
                                   "-o", str(elf), str(src)], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"assembling failed:\n{done.stderr}")
            subprocess.run([OBJCOPY, "-O", "binary", str(elf), str(binf)], check=True)
        syms = {}
        nm = subprocess.run([CC.replace("gcc", "nm"), str(elf)], capture_output=True,
                            text=True, check=True).stdout
        for line in nm.splitlines():
            parts = line.split()
            if len(parts) == 3:
                syms[parts[2]] = int(parts[0], 16)
        cache[source] = (binf.read_bytes(), syms)
        return cache[source]

    return asm


@pytest.fixture(scope="session")
def rv_env():
    """Helpers for tests (conftest is not importable under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(make_machine=make_machine, ProgramExit=ProgramExit,
                                 RAM_BASE=RAM_BASE, run_image=run_image)
