"""QMP with a Linux guest (guests/build.py's kernel and busybox initramfs) on
riscv-virt: the disk's statistics move as Linux reads it, a reset boots it
again, and ``poweroff -f`` in the guest is a guest SHUTDOWN."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmpkit import connect, next_events

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing.oracles import oracle_missing

ROOT = Path(__file__).resolve().parents[2]


def _guest_file(name: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                           name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        oracle_missing(f"guest {name} is not built (python3 guests/build.py {name})")
    return proc.stdout.strip()


@pytest.fixture
def linux(sockdir: Path) -> Iterator[tuple[Any, BufferChar, Path]]:
    from vmforge_riscv_virt.machine import RiscvVirt

    kernel, initrd = _guest_file("linux-riscv64"), _guest_file("initramfs-riscv64")
    disk = sockdir / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    console = BufferChar()
    machine = RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=256 << 20, kernel=kernel, initrd=initrd,
        append="console=ttyS0", serial=[console],
        drives=[DriveSpec.parse(f"file={disk},format=raw,if=none,id=hd0")],
        devices=[DeviceSpec.parse("virtio-blk-device,drive=hd0")]))
    sock = sockdir / "linux.qmp"
    server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
    machine.start()
    try:
        yield machine, console, sock
    finally:
        machine.stop(10)
        server.close()


def test_linux_guest_under_qmp(linux: tuple[Any, BufferChar, Path]) -> None:
    machine, console, sock = linux
    console.wait_for(b"# ", timeout=120)

    async def run() -> None:
        c = await connect(sock)
        (stats,) = await c.execute("query-blockstats")
        assert stats["device"] == "hd0"
        assert stats["stats"]["rd_operations"] > 0 and stats["stats"]["rd_bytes"] > 0
        info = await c.execute("human-monitor-command", {"command-line": "info block"})
        assert "disk.raw" in info
        console.clear()
        await c.execute("system_reset")
        (event,) = await next_events(c, 1)
        assert event["event"] == "RESET" and event["data"]["guest"] is False
        await asyncio.to_thread(console.wait_for, b"# ", 120)    # booted again
        console.feed(b"poweroff -f\n")
        (event,) = await next_events(c, 1, timeout=60)
        assert event["event"] == "SHUTDOWN"
        assert event["data"] == {"guest": True, "reason": "guest-shutdown"}
        await c.disconnect()

    asyncio.run(run())
    assert machine.wait(30) == 0
