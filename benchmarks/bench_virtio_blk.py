"""virtio-blk seen from a Linux guest: vmforge vs QEMU 7.2, same kernel, initramfs
and image format, side by side in one run.

Run: ``.venv/bin/python -m pytest benchmarks/bench_virtio_blk.py
--benchmark-columns=min,mean,max,rounds`` (needs ``make guests`` and Debian's
opensbi and qemu-system-misc).  Each emulator boots once per module with a
256 MiB raw disk on virtio-mmio; a round is one command typed at the guest's
shell, timed on the host from the keystroke to the next prompt:

- sequential write: ``dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct conv=fsync``
- sequential read:  ``dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct``
- 4 KiB reads:      ``dd if=/dev/vda of=/dev/null bs=4k count=4096 iflag=direct``
  (one request per block: requests per second, the path's cost per request)

MB/s and requests/s are in each entry's ``extra_info``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.testing.console import ProcessConsole
from vmforge.testing.oracles import oracle_missing, require_files

from .bench_boot import FW_JUMP, SHELL_PROMPT, guest

DISK = 256 << 20
COMMANDS = {
    "seq-write-64MiB": (b"dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct conv=fsync",
                        64 << 20, 64),
    "seq-read-64MiB": (b"dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct", 64 << 20, 64),
    "4k-reads-16MiB": (b"dd if=/dev/vda of=/dev/null bs=4k count=4096 iflag=direct",
                       16 << 20, 4096),
}


def _boot_vmforge(disk: Path) -> tuple[Any, Callable[[], None]]:
    from vmforge_riscv_virt.machine import RiscvVirt

    console = BufferChar()
    m = RiscvVirt(MachineConfig(machine="riscv-virt", memory=256 << 20, bios=FW_JUMP,
                                kernel=guest("linux-riscv64"),
                                initrd=guest("initramfs-riscv64"), append="console=ttyS0",
                                serial=[console],
                                drives=[DriveSpec(str(disk), "raw", interface="none", id="hd0")],
                                devices=[DeviceSpec("virtio-blk-device", {"drive": "hd0"})]))
    m.start()
    return console, m.stop


def _boot_qemu(disk: Path) -> tuple[Any, Callable[[], None]]:
    qemu = shutil.which("qemu-system-riscv64")
    if qemu is None:
        oracle_missing("qemu-system-riscv64 is not installed (Debian qemu-system-misc)")
    console = ProcessConsole([qemu, "-M", "virt", "-m", "256M", "-nographic", "-bios", FW_JUMP,
                           "-kernel", guest("linux-riscv64"),
                           "-initrd", guest("initramfs-riscv64"), "-append", "console=ttyS0",
                           "-drive", f"file={disk},format=raw,if=none,id=hd0",
                           "-device", "virtio-blk-device,drive=hd0"])
    return console, console.close


@pytest.fixture(scope="module", params=["vmforge", "qemu"])
def guest_shell(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[str, Any]]:
    require_files([FW_JUMP], "Debian's OpenSBI (apt-get install opensbi)")
    disk = tmp_path_factory.mktemp("blk") / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(DISK)
    boot = _boot_vmforge if request.param == "vmforge" else _boot_qemu
    console, stop = boot(disk)
    try:
        console.wait_for(SHELL_PROMPT, timeout=300)
        yield request.param, console
    finally:
        stop()


@pytest.mark.parametrize("case", list(COMMANDS))
def test_virtio_blk_in_guest(benchmark, guest_shell: tuple[str, Any], case: str) -> None:
    emulator, console = guest_shell
    command, nbytes, requests = COMMANDS[case]

    def run() -> float:
        t0 = time.perf_counter()
        console.feed(command + b"; echo status=$?\n")
        console.wait_for(re.compile(rb"status=0"), timeout=300)
        console.wait_for(SHELL_PROMPT, timeout=60)
        return time.perf_counter() - t0

    benchmark.group = f"virtio-blk in the guest: {case}"
    benchmark.extra_info["emulator"] = emulator
    run()                                          # warm: the first pass allocates
    seconds = benchmark.pedantic(run, rounds=5, iterations=1)
    best = benchmark.stats.stats.min if benchmark.stats else seconds
    benchmark.extra_info["MB/s"] = round(nbytes / best / 1e6, 1)
    benchmark.extra_info["requests/s"] = round(requests / best)
    assert seconds > 0
