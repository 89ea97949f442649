"""Real guests on the riscv-virt machine: Debian's OpenSBI + U-Boot, and Linux
built by the project's recipe (guests/) with a busybox initramfs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.testing.oracles import needs, oracle_missing
from vmforge_riscv_virt.machine import OPENSBI_DIRS, RiscvVirt

ROOT = Path(__file__).resolve().parents[4]
UBOOT = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"
FW_JUMP = os.path.join(OPENSBI_DIRS[0], "fw_jump.bin")
PROMPT = re.compile(rb"vmforge:[^\r\n]*# ")

needs_firmware = needs(files=(UBOOT, FW_JUMP),
                       what="Debian's firmware (apt-get install opensbi u-boot-qemu)")


def guest(name: str) -> str:
    """The path of a guest built by guests/build.py (``make guests`` builds them)."""
    out = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                          name], capture_output=True, text=True)
    path = out.stdout.strip()
    if out.returncode != 0 or not path or not os.path.exists(path):
        oracle_missing(f"guest {name} is not built: run 'make guests'")
    return path


def machine(console: BufferChar, **cfg) -> RiscvVirt:
    return RiscvVirt(MachineConfig(machine="riscv-virt", serial=[console], **cfg))


@needs_firmware
def test_opensbi_uboot_prompt_commands_poweroff() -> None:
    console = BufferChar()
    m = machine(console, bios=FW_JUMP, kernel=UBOOT)
    m.start()
    try:
        console.wait_for(b"Hit any key to stop autoboot", timeout=60)
        console.feed(b"\n")
        console.wait_for(b"=> ", timeout=30)
        console.feed(b"version\n")
        console.wait_for(re.compile(rb"U-Boot 20\d\d\.\d\d.*\r?\n.*gcc", re.S), timeout=30)
        console.wait_for(b"=> ", timeout=30)
        console.feed(b"virtio scan\n")
        console.wait_for(b"=> ", timeout=30)
        console.feed(b"virtio info\n")
        console.wait_for(b"=> ", timeout=30)
        console.feed(b"poweroff\n")
        assert m.wait(30) == 0
    finally:
        m.stop()
    out = console.output.decode(errors="replace")
    assert "OpenSBI v" in out and "Model: riscv-virtio,qemu" in out
    assert "serial@10000000" in out
    # eight empty virtio-mmio slots: U-Boot finds no device and prints nothing (as
    # on QEMU); an error or a bogus device would show between the prompts
    for command in ("virtio scan", "virtio info"):
        reply = out.split(f"=> {command}", 1)[1].split("=> ", 1)[0]
        assert reply.strip() == "", f"{command!r} printed {reply!r}"
    assert m.shutdown_reason == "poweroff"


@pytest.mark.parametrize("harts", [1, 2])
def test_linux_boots_to_a_shell(harts: int) -> None:
    kernel, initrd = guest("linux-riscv64"), guest("initramfs-riscv64")
    console = BufferChar()
    m = machine(console, memory=256 << 20, smp=harts, bios=FW_JUMP, kernel=kernel,
                initrd=initrd, append="console=ttyS0")
    m.start()
    try:
        console.wait_for(PROMPT, timeout=180)
        console.feed(b"uname -sm; grep -c ^processor /proc/cpuinfo; echo sum=$((20+22))\n")
        console.wait_for(b"sum=42", timeout=60)
        console.wait_for(PROMPT, timeout=30)
        console.feed(b"grep ttyS0 /proc/interrupts; ls /sys/bus/platform/devices\n")
        console.wait_for(PROMPT, timeout=30)
        console.feed(b"poweroff -f\n")
        assert m.wait(60) == 0
    finally:
        m.stop()
    out = console.output.decode(errors="replace")
    assert "Linux 6.1" in out and "riscv64" in out
    assert re.search(rf"\r?\n{harts}\r?\n", out), f"the guest should see {harts} CPU(s)"
    for dev in ("10000000.serial", "101000.rtc", "2000000.clint", "100000.test",
                *(f"{0x10001000 + i * 0x1000:x}.virtio_mmio" for i in range(8))):
        assert dev in out, f"{dev} missing from /sys/bus/platform/devices"
    assert re.search(r"PLIC.*ttyS0", out), "the UART's interrupt comes through the PLIC"
    assert m.shutdown_reason == "poweroff"


def test_vmforge_run_exits_with_the_finisher_status(tmp_path) -> None:
    """`vmforge run` boots Linux and `poweroff -f` ends the process with status 0."""
    kernel, initrd = guest("linux-riscv64"), guest("initramfs-riscv64")
    if shutil.which("setsid") is None:
        oracle_missing("setsid (util-linux) is not installed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt", "-m", "256M",
         "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0", "-nographic",
         "--timeout", "240"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    assert proc.stdout is not None and proc.stdin is not None
    while not PROMPT.search(out):
        chunk = proc.stdout.read1(4096)
        assert chunk, f"vmforge exited early: {proc.stderr.read().decode()}"
        out += chunk
    proc.stdin.write(b"poweroff -f\n")
    proc.stdin.flush()
    try:
        status = proc.wait(60)
    except subprocess.TimeoutExpired:       # (seen once under load: say where it was)
        proc.kill()
        rest, err = proc.communicate()
        raise AssertionError(f"no exit 60 s after poweroff -f; console ends with "
                             f"{(out + rest)[-400:]!r}; stderr {err[-400:]!r}") from None
    assert status == 0
