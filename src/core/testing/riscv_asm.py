"""Tiny RISC-V programs for tests, assembled with Debian's riscv64-unknown-elf
binutils (a missing toolchain skips the test, or fails it in CI)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmforge.testing.oracles import require_program

__all__ = ["TOOLCHAIN", "assemble"]

#: the Debian package with the binutils
TOOLCHAIN = "gcc-riscv64-unknown-elf"


def assemble(source: str, workdir: Path, march: str = "rv64gc") -> bytes:
    """The ``.text`` of ``source`` (GNU as syntax) as raw bytes, position as written."""
    as_ = require_program("riscv64-unknown-elf-as", TOOLCHAIN)
    objcopy = require_program("riscv64-unknown-elf-objcopy", TOOLCHAIN)
    src, obj, raw = workdir / "p.S", workdir / "p.o", workdir / "p.bin"
    src.write_text(source)
    subprocess.run([as_, f"-march={march}", "-o", str(obj), str(src)], check=True, timeout=60)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(raw)], check=True,
                   timeout=60)
    return raw.read_bytes()
