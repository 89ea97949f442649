"""The guests that vmforge's RISC-V `virt` machine will boot, checked on QEMU first.

1. OpenSBI (Debian's fw_jump.bin) + our Linux 6.1 Image + busybox initramfs
   reach a shell; uname, cpuinfo, virtio devices look right; `poweroff -f` ends QEMU.
2. OpenSBI + Debian's S-mode U-Boot reach `=>`; version, virtio scan/info, poweroff.

Products come from guests/build.py (skipped when not built; VMFORGE_BUILD_GUESTS=1
builds them).  Boot times are printed (pytest -s) and kept as user properties.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SHELL_PROMPT = r"vmforge:/[^\n]*# "
UBOOT_PROMPT = r"(?<=\n)=> "  # at the start of a line


def qemu_virt_argv(qemu: str, bios: Path, kernel: Path, *extra: str) -> list[str]:
    return [qemu, "-M", "virt", "-m", "256M", "-nographic", "-no-reboot",
            "-bios", str(bios), "-kernel", str(kernel), *extra]


def virtio_blk_args(disk: Path) -> list[str]:
    return ["-drive", f"file={disk},format=raw,if=none,id=hd0",
            "-device", "virtio-blk-device,drive=hd0"]


@pytest.mark.parametrize("cmdline", ["console=ttyS0", "console=hvc0 earlycon=sbi"],
                         ids=["ttyS0", "hvc0"])
def test_linux_busybox_boots_to_shell(
        cmdline: str, qemu_riscv64: str, riscv_firmware: dict[str, Path],
        guest_products: dict[str, Path], virtio_disk: Path, console_factory: Callable[..., Any],
        record_property: Callable[[str, object], None]) -> None:
    argv = qemu_virt_argv(
        qemu_riscv64, riscv_firmware["opensbi"], guest_products["linux-riscv64"],
        "-smp", "2", "-initrd", str(guest_products["initramfs-riscv64"]),
        "-append", cmdline, *virtio_blk_args(virtio_disk),
        "-device", "virtio-rng-device")
    con: Any = console_factory(argv)
    t0: float = con.started

    con.expect(r"OpenSBI v\d", timeout=30)
    con.expect(r"Linux version 6\.1\.", timeout=30)
    con.expect(r"=== vmforge riscv64 guest: Linux 6\.1\.\S+ on riscv64, 2 cpu", timeout=60)
    con.expect(SHELL_PROMPT, timeout=30)
    boot_s = time.monotonic() - t0
    record_property("qemu_linux_shell_seconds", round(boot_s, 3))
    print(f"\nQEMU: OpenSBI + Linux + busybox ({cmdline}, -smp 2) to the shell prompt "
          f"in {boot_s:.3f} s")

    def sh(line: str) -> str:
        status, out = con.command(line, SHELL_PROMPT, timeout=30)
        assert status == 0, f"{line!r} exited {status}:\n{out}"
        return out

    uname = sh("uname -a")
    assert re.search(r"^Linux vmforge 6\.1\.\S+ .*\briscv64\b", uname, re.M), uname

    cpuinfo = sh("cat /proc/cpuinfo")
    assert len(re.findall(r"^processor\s*:\s*\d+", cpuinfo, re.M)) == 2, cpuinfo
    isa = re.search(r"^isa\s*:\s*(\S+)", cpuinfo, re.M)
    assert isa and isa.group(1).startswith("rv64imafdc"), cpuinfo
    assert re.search(r"^mmu\s*:\s*sv(39|48|57)", cpuinfo, re.M), cpuinfo

    # virtio-mmio: the block device has the disk's size, the rng feeds hwrng
    assert sh("cat /sys/block/vda/size").split() == [str((16 << 20) // 512)]
    assert "virtio_rng" in sh("cat /sys/class/misc/hw_random/rng_available")
    # goldfish RTC, 16550 console, mounts made by /init
    assert "goldfish" in sh("cat /sys/class/rtc/rtc0/name")
    mounts = sh("cat /proc/mounts")
    for fs in ("proc /proc", "sysfs /sys", "devtmpfs /dev", "tmpfs /tmp"):
        assert fs in mounts, mounts
    assert sh("cat /proc/cmdline").strip() == cmdline

    con.sendline("poweroff -f")
    t1 = time.monotonic()
    assert con.wait(timeout=20) == 0
    record_property("qemu_linux_poweroff_seconds", round(time.monotonic() - t1, 3))


def test_uboot_prompt_virtio_poweroff(
        qemu_riscv64: str, riscv_firmware: dict[str, Path], virtio_disk: Path,
        console_factory: Callable[..., Any],
        record_property: Callable[[str, object], None]) -> None:
    argv = qemu_virt_argv(qemu_riscv64, riscv_firmware["opensbi"], riscv_firmware["u-boot"],
                          *virtio_blk_args(virtio_disk))
    con: Any = console_factory(argv)
    t0: float = con.started

    con.expect(r"U-Boot 20\d\d\.\d\d", timeout=30)
    con.expect(r"Hit any key to stop autoboot", timeout=30)
    con.send(" ")
    con.expect(UBOOT_PROMPT, timeout=30)
    boot_s = time.monotonic() - t0
    record_property("qemu_uboot_prompt_seconds", round(boot_s, 3))
    print(f"\nQEMU: OpenSBI + U-Boot to the => prompt in {boot_s:.3f} s")

    def uboot(line: str, want: str) -> str:
        con.sendline(line)
        m = con.expect(rf"{re.escape(line)}\r*\n((?:.|\n)*?){UBOOT_PROMPT}", timeout=30)
        out = m.group(1)
        assert re.search(want, out), f"{line!r}: no {want!r} in:\n{out}"
        return out

    uboot("version", r"U-Boot 20\d\d\.\d\d")
    uboot("virtio scan", r"")
    uboot("virtio info", r"Device 0: QEMU VirtIO Block Device(?:.|\n)*32768 x 512")

    con.sendline("poweroff")
    assert con.wait(timeout=20) == 0
