"""Our device tree, handed to QEMU with ``-dtb``, boots OpenSBI and Linux to a
shell that sees both harts, the goldfish RTC and the PLIC, and ``poweroff -f``
ends QEMU through the firmware (the finisher the tree describes).

Needs the test guests (``guests/build.py``) and Debian's OpenSBI; skipped otherwise.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmforge.chardev import NullChar
from vmforge.testing.oracles import oracle_missing
from vmforge.virtio.mmio import VirtioMmioTransport
from vmforge_riscv_devices import Clint, GoldfishRtc, Plic, SifiveTest
from vmforge_riscv_virt import VirtFdtConfig, build_virt_fdt
from vmforge_riscv_virt import board as virt
from vmforge_riscv_virt.fdt_virt import standard_placements
from vmforge_serial import Ns16550a

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[4]
OPENSBI = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin")
PROMPT = re.compile(rb"vmforge:/[^\n]*# ")


def guest(name: str) -> Path:
    build = ROOT / "guests" / "build.py"
    if not build.is_file():
        oracle_missing("no guests/build.py in this tree")
    out = subprocess.run([sys.executable, str(build), "--print-path", name],
                         capture_output=True, text=True, timeout=60)
    path = Path(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None
    if out.returncode != 0 or path is None or not path.is_file():
        oracle_missing(f"test guest {name} is not built (python3 guests/build.py all)")
    return path


def read_until(proc: subprocess.Popen, pattern: re.Pattern[bytes], seen: bytearray,
               timeout: float) -> None:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    start = len(seen)
    while not pattern.search(seen, start):
        left = deadline - time.monotonic()
        if left <= 0 or (proc.poll() is not None and not sel.select(0)):
            raise AssertionError(f"no {pattern.pattern!r} on the console:\n"
                                 f"{seen[-3000:].decode(errors='replace')}")
        if sel.select(min(left, 1.0)):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                continue
            seen += chunk


def test_linux_boots_on_our_device_tree(tmp_path):
    qemu = shutil.which("qemu-system-riscv64")
    if qemu is None or not OPENSBI.is_file():
        oracle_missing("qemu-system-riscv64 or Debian's OpenSBI (fw_jump.bin) is missing")
    kernel, initrd = guest("linux-riscv64"), guest("initramfs-riscv64")
    placed = standard_placements(
        Plic(num_harts=2), Clint(num_harts=2), SifiveTest(), GoldfishRtc(),
        Ns16550a(NullChar()), [VirtioMmioTransport() for _ in range(virt.VIRTIO_COUNT)])
    dtb = tmp_path / "vmforge-virt.dtb"
    dtb.write_bytes(build_virt_fdt(VirtFdtConfig(num_harts=2, mem_size=256 << 20),
                                   placed).to_dtb())
    proc = subprocess.Popen(
        # one TCG thread for both harts: the second hart cannot be starved by a busy
        # host past Linux's one-second wait for it to come online
        [qemu, "-M", "virt", "-accel", "tcg,thread=single", "-m", "256M", "-smp", "2",
         "-nographic", "-no-reboot",
         "-bios", str(OPENSBI), "-kernel", str(kernel), "-initrd", str(initrd),
         "-append", "console=ttyS0", "-dtb", str(dtb)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    try:
        read_until(proc, PROMPT, seen, 90)
        assert proc.stdin is not None
        proc.stdin.write(b"echo CPUS=$(grep -c ^processor /proc/cpuinfo) "
                         b"RTC=$(cat /sys/class/rtc/rtc0/name); cat /proc/interrupts\n")
        proc.stdin.flush()
        read_until(proc, re.compile(rb"RTC=goldfish\S* 101000\.rtc[\s\S]*# "), seen, 30)
        text = seen.decode(errors="replace")
        cpus = re.search(r"(?<!NR_)CPUS=(\d+) RTC=", text)
        assert cpus and cpus.group(1) == "2", text[-3000:]
        assert "plic@c000000: mapped 95 interrupts with 2 handlers for 4 contexts" in text
        assert re.search(r"SiFive PLIC\s+10 .*ttyS0", text), text[-2000:]
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        assert b"reboot: Power down" in seen + (proc.stdout.read() if proc.stdout else b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
