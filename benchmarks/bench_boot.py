"""Time to the U-Boot prompt and to the Linux shell: vmforge vs QEMU, same files.

Run: ``.venv/bin/python -m pytest benchmarks/bench_boot.py --benchmark-columns=min,mean``
(needs ``make guests`` and Debian's opensbi, u-boot-qemu and qemu-system-misc).
Each round boots from power-on until the prompt appears on the console.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.testing.console import CURSOR_QUERY, ProcessConsole
from vmforge.testing.oracles import oracle_missing

ROOT = Path(__file__).resolve().parent.parent
QEMU = shutil.which("qemu-system-riscv64")
FW_JUMP = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin"
UBOOT = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"
UBOOT_PROMPT = b"Hit any key to stop autoboot"
SHELL_PROMPT = re.compile(rb"vmforge:[^\r\n]*# ")
#: the prompt and the cursor position query busybox's line editor sends after it:
#: a console in terminal mode (shell_console) answers it, and a line typed after
#: that is read at once, as from a terminal (typed before, the editor waits for
#: its answer some tens of milliseconds, and that wait would be timed)
SHELL_READY = re.compile(SHELL_PROMPT.pattern + re.escape(CURSOR_QUERY))


@functools.cache
def guest_path(name: str) -> str | None:
    """The built file of the recipe's guest ``name`` (guests/build.py), or None; asked
    of build.py once a process (each command line built here names two guests)."""
    out = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                          name], capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    return path if out.returncode == 0 and path and os.path.isfile(path) else None


def guest(name: str) -> str:
    """guest_path, or the test skipped (failed in CI) when that guest is not built."""
    path = guest_path(name)
    if path is None:
        oracle_missing(f"guest {name} is not built: run 'make guests'")
    return path


def shell_argv(engine: str, *args: str, bios: str = FW_JUMP) -> list[str]:
    """The command line that boots the recipe's Linux guest (256 MiB, ``bios``: a
    file, or "default": the machine's own OpenSBI) on ``engine`` ("vmforge": ``vmforge
    run -M riscv-virt``, or "qemu": ``qemu-system-riscv64 -M virt``), ``args`` (drives,
    devices, netdevs) on both alike."""
    common = ["-m", "256M", "-bios", bios, "-kernel", guest("linux-riscv64"),
              "-initrd", guest("initramfs-riscv64"), "-append", "console=ttyS0",
              "-nographic", *args]
    if engine == "vmforge":
        return [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt", *common]
    if QEMU is None:
        oracle_missing("qemu-system-riscv64 is not installed (Debian qemu-system-misc)")
    return [QEMU, "-M", "virt", "-monitor", "none", *common]


def shell_console(engine: str, *args: str) -> ProcessConsole:
    """shell_argv's guest (OpenSBI's fw_jump on both) booting, its console answering
    as a terminal does.  Wait for SHELL_READY before typing."""
    return ProcessConsole(shell_argv(engine, *args), terminal=True)


def targets(kind: str) -> dict:
    if not os.path.exists(FW_JUMP) or not os.path.exists(UBOOT):
        oracle_missing("Debian's opensbi and u-boot-qemu are not installed")
    if kind == "uboot":
        return {"kernel": UBOOT, "prompt": UBOOT_PROMPT, "memory": "128M", "append": None,
                "initrd": None}
    return {"kernel": guest("linux-riscv64"), "initrd": guest("initramfs-riscv64"),
            "prompt": SHELL_PROMPT, "memory": "256M", "append": "console=ttyS0"}


def boot_vmforge(t: dict) -> float:
    from vmforge_riscv_virt.machine import RiscvVirt

    console = BufferChar()
    m = RiscvVirt(MachineConfig(machine="riscv-virt", memory=MachineConfig.parse_memory(
        t["memory"]), bios=FW_JUMP, kernel=t["kernel"], initrd=t["initrd"],
        append=t["append"] or "", serial=[console]))
    t0 = time.perf_counter()
    m.start()
    try:
        console.wait_for(t["prompt"], timeout=300)
        return time.perf_counter() - t0
    finally:
        m.stop()


def boot_qemu(t: dict) -> float:
    if QEMU is None:
        oracle_missing("qemu-system-riscv64 (Debian qemu-system-misc) is not installed")
    cmd = [QEMU, "-M", "virt", "-m", t["memory"], "-nographic", "-bios", FW_JUMP,
           "-kernel", t["kernel"]]
    if t["initrd"]:
        cmd += ["-initrd", t["initrd"], "-append", t["append"]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    buf = b""
    pattern = t["prompt"] if isinstance(t["prompt"], re.Pattern) else re.compile(
        re.escape(t["prompt"]))
    try:
        while not pattern.search(buf):
            chunk = proc.stdout.read1(4096)
            if not chunk:
                raise RuntimeError(f"QEMU exited before the prompt: {buf[-300:]!r}")
            buf += chunk
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("emulator", ["vmforge", "qemu"])
@pytest.mark.parametrize("target", ["uboot", "linux-shell"])
def test_time_to_prompt(benchmark, emulator: str, target: str) -> None:
    t = targets("uboot" if target == "uboot" else "linux")
    boot = boot_vmforge if emulator == "vmforge" else boot_qemu
    benchmark.group = f"time to the {target} prompt"
    seconds = benchmark.pedantic(boot, args=(t,), rounds=3, iterations=1)
    assert seconds > 0
