"""Fixtures: a bare board (a Machine with a paused clock) and QEMU's own
``virt`` board to compare with."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from vmforge.testing.boards import BareBoard
from vmforge.testing.oracles import oracle_missing


@pytest.fixture
def make_board() -> Callable[..., BareBoard]:
    boards: list[BareBoard] = []

    def make(**overrides: Any) -> BareBoard:
        b = BareBoard(**overrides)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.close()


@pytest.fixture
def board(make_board: Callable[..., BareBoard]) -> BareBoard:
    return make_board()


class Qemu:
    """Runs ``qemu-system-riscv64 -M virt`` to read what QEMU 7.2 itself does."""

    def __init__(self, binary: str, tmp: Any) -> None:
        self.binary = binary
        self.tmp = tmp

    def dumpdtb(self, smp: int = 1, memory: str = "256M", *args: str) -> bytes:
        out = self.tmp / f"qemu-virt-{smp}-{memory}.dtb"
        subprocess.run([self.binary, "-M", f"virt,dumpdtb={out}", "-m", memory, "-smp", str(smp),
                        "-display", "none", "-serial", "none", "-monitor", "none", *args],
                       check=True, capture_output=True, timeout=60)
        return out.read_bytes()

    def monitor(self, commands: list[str], *args: str) -> str:
        """Run monitor commands on a stopped (``-S``) virt machine; their output."""
        script = "".join(c + "\n" for c in [*commands, "quit"])
        res = subprocess.run([self.binary, "-M", "virt", "-m", "256M", "-bios", "none",
                              "-display", "none", "-serial", "none", "-S",
                              "-monitor", "stdio", *args],
                             input=script, capture_output=True, text=True, timeout=60,
                             check=True)
        return res.stdout.replace("\r", "")

    def xp_words(self, addr: int, count: int, *args: str) -> list[int]:
        """``count`` 32-bit words of guest physical memory (MMIO included)."""
        text = self.monitor([f"xp /{count}wx {addr:#x}"], *args)
        words = []
        for line in text.splitlines():
            head, sep, rest = line.partition(": ")
            if sep and head.strip().startswith("00"):
                words += [int(w, 16) for w in rest.split()]
        return words[:count]


@pytest.fixture(scope="session")
def qemu(tmp_path_factory: pytest.TempPathFactory) -> Qemu:
    binary = shutil.which("qemu-system-riscv64")
    if binary is None:
        oracle_missing("qemu-system-riscv64 is not installed (tools/setup-host.sh installs it)")
    return Qemu(binary, tmp_path_factory.mktemp("qemu"))


@pytest.fixture(scope="session")
def dtc() -> str:
    binary = shutil.which("dtc")
    if binary is None:
        oracle_missing("dtc is not installed (device-tree-compiler)")
    return binary
