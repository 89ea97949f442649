"""Builds the spike test programs with Debian's riscv64-unknown-elf-gcc."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vmforge.testing.oracles import oracle_missing

PROGS = Path(__file__).parent / "progs"
CC = shutil.which("riscv64-unknown-elf-gcc")

#: the riscv-tests ISA suite runs only when VMFORGE_RISCV_TESTS names a build of it
collect_ignore = [] if os.environ.get("VMFORGE_RISCV_TESTS") else ["test_spike_riscv_tests.py"]


@pytest.fixture(scope="session")
def build_prog():
    """``build_prog("hello")`` -> path of the ELF, cached outside the repository."""
    if CC is None:
        oracle_missing("riscv64-unknown-elf-gcc is not installed "
                       "(Debian package gcc-riscv64-unknown-elf)")
    cache = Path(os.environ.get("VMFORGE_CACHE", Path.home() / ".cache" / "vmforge")) / "spike"

    def build(name: str) -> Path:
        sources = [PROGS / "crt.S", PROGS / f"{name}.c"]
        script = PROGS / "link.ld"
        key = hashlib.sha256(b"".join(p.read_bytes() for p in [*sources, script])).hexdigest()
        key = key[:16]
        out = cache / f"{name}-{key}.elf"
        if not out.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            subprocess.run([CC, "-O2", "-march=rv64gc", "-mabi=lp64d", "-mcmodel=medany",
                            "-nostdlib", "-nostartfiles", "-ffreestanding", "-static",
                            f"-Wl,-T,{script}", "-Wl,--build-id=none",
                            "-Wl,--no-warn-rwx-segments", "-o", str(tmp),
                            *map(str, sources)], check=True)
            tmp.rename(out)
        return out

    return build
