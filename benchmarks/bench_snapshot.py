"""Restore time of a VM snapshot: ``loadvm`` of a 256 MiB riscv-virt guest.

Run: ``.venv/bin/python -m pytest benchmarks/bench_snapshot.py --benchmark-columns=min,mean``
(needs ``make guests``, Debian's opensbi and qemu-utils).

- ``linux-shell``: a Linux guest at its busybox shell with a counter loop running
  and an ext2 file system on its qcow2 disk, ``savevm`` from the monitor; each
  round builds a fresh machine of the same configuration (not timed) and times
  ``loadvm``: reading the VM state from the qcow2 image, checking it, reverting
  the disk, loading RAM (zero pages skipped) and every device and hart.
- ``ram-full``: the same machine with all of its 256 MiB written with non-zero
  bytes before the snapshot (the worst case: every page travels).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))     # the boot helpers of bench_boot.py
from bench_boot import FW_JUMP, SHELL_PROMPT, guest

from vmforge.chardev import BufferChar, NullChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.monitor import Monitor
from vmforge.testing.oracles import oracle_missing

MEMORY = 256 << 20


def make(image: Path, console: Any) -> Any:
    from vmforge_riscv_virt.machine import RiscvVirt

    if not os.path.exists(FW_JUMP):
        oracle_missing("Debian's opensbi is not installed")
    return RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=MEMORY, bios=FW_JUMP, kernel=guest("linux-riscv64"),
        initrd=guest("initramfs-riscv64"), append="console=ttyS0", serial=[console],
        drives=[DriveSpec(str(image), "qcow2", interface="none", id="hd0")],
        devices=[DeviceSpec("virtio-blk-device", {"drive": "hd0"})]))


def monitor(m: Any, line: str) -> str:
    """A monitor command on the machine's thread, as the monitor runs it."""
    done, out = threading.Event(), []
    m.call_soon(lambda: (out.append(Monitor(m, NullChar()).execute(line)), done.set()))
    assert done.wait(120)
    return out[0]


@pytest.fixture(scope="module", params=["linux-shell", "ram-full"])
def snapshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("snap") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    console = BufferChar()
    m = make(image, console)
    m.start()
    try:
        console.wait_for(SHELL_PROMPT, timeout=120)
        console.feed(b"mke2fs -q /dev/vda && mount /dev/vda /mnt && i=0 && while true; do "
                     b"i=$((i+1)); echo count=$i; echo $i > /mnt/n; sleep 0.1; done\n")
        console.wait_for(b"count=5", timeout=60)
        if request.param == "ram-full":
            m.call_soon(m.pause)
            (ram,) = [r for r in m.space.memory.regions if not r.readonly]
            view = memoryview(ram.buffer)
            filler = bytes(range(1, 256)) * 16
            for off in range(0, len(view), 1 << 20):    # every page made non-zero
                page = view[off:off + (1 << 20)]
                for p in range(0, len(page), 4096):
                    if not any(page[p:p + 64]):
                        page[p:p + 64] = filler[:64]
        assert monitor(m, "savevm s1") == ""
    finally:
        m.stop(30)
    return image


def test_loadvm_256m(benchmark: Any, snapshot: Path) -> None:
    from vmforge.migration.snapshot import loadvm

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        while machines:                  # the image's lock goes with the last machine
            machines.pop().close()
        m = make(snapshot, BufferChar())
        m.realize()
        machines.append(m)
        return (m, "s1"), {}

    machines: list[Any] = []
    try:
        benchmark.pedantic(loadvm, setup=setup, rounds=5, iterations=1)
        benchmark.extra_info["vm_state_bytes"] = os.path.getsize(snapshot)
    finally:
        for m in machines:
            m.close()
