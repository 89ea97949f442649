"""The x86 microvm on KVM as a user times it: a whole ``vmforge run -M microvm -accel
kvm`` of a tiny PVH guest (prints a line through the UART, ends through
``isa-debug-exit``) beside ``qemu-system-x86_64 -M microvm,acpi=off -accel kvm``
running the same ELF, start to exit.

Run::

    .venv/bin/python -m pytest benchmarks/bench_microvm.py --benchmark-columns=mean,min,rounds

Both processes build the VM, load the ELF, run the guest (a few port writes in guest
kernel mode, which a nested KVM emulates) and tear down; QEMU runs its qboot firmware
first, vmforge enters the kernel itself.  ``VMFORGE_BENCH_ROUNDS`` sets the rounds
(default 10).  Skipped, saying why, without ``/dev/kvm`` or QEMU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.testing.oracles import needs, oracle_missing
from vmforge.testing.x86_elf import build_elf, pvh_source

pytestmark = needs("qemu-system-x86_64", package="qemu-system-x86")

ROUNDS = int(os.environ.get("VMFORGE_BENCH_ROUNDS", "10"))
EXIT = "isa-debug-exit,iobase=0xf4,iosize=4"
GUEST = """
    .text
    .code32
    .globl _start
_start:
    mov $0x3f8, %dx
    lea msg, %esi
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  mov $0xf4, %dx
    mov $0x21, %al
    out %al, %dx
3:  hlt
    jmp 3b
    .data
msg: .asciz "hello from the guest\\n"
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = kvm_available()
    if why is not None:
        oracle_missing(why)
    return build_elf(tmp_path_factory.mktemp("microvm"), pvh_source(".long _start", body=GUEST),
                     bits=32, name="hello")


def _commands(kernel: Path) -> dict[str, list[str]]:
    return {
        "vmforge": [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "microvm",
                    "-accel", "kvm", "-m", "128M", "-kernel", str(kernel), "-device", EXIT,
                    "-serial", "stdio"],
        "qemu": ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "kvm", "-m", "128M",
                 "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                 "-kernel", str(kernel), "-device", EXIT],
    }


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == (0x21 << 1) | 1, r.stderr
    assert b"hello from the guest" in r.stdout


@pytest.mark.parametrize("who", ["vmforge", "qemu"])
def test_whole_run_of_a_pvh_guest(benchmark, kernel: Path, who: str) -> None:
    cmd = _commands(kernel)[who]
    benchmark.extra_info["command"] = " ".join(cmd[:8]) + " ..."
    benchmark.pedantic(_run, args=(cmd,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
