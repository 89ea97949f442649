"""Block jobs under a Linux guest that writes: guests/build.py's kernel and busybox
initramfs on riscv-virt, a virtio-blk disk on a qcow2 chain, and a shell writer
(:mod:`vmforge.testing.disk_pattern`) rewriting checksummed 4 KiB blocks with
O_DIRECT while, one after the other over QMP: an external snapshot, an
intermediate commit, a stream, an active commit, a backup and a mirror with its
pivot run.  Each job is held at a low speed until the guest has written during
it, then let go.  After each, the guest reads back every block it wrote (the
last generation it logged, whole), the chain is what QEMU leaves, and at the end
a fresh machine given only the mirror's copy boots and verifies again; the host
checks every block of the copy and of the backup (the disk as it was when the
backup started: the writer held at that moment) and ``qemu-img check``."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockjobkit import wait_event
from qemu.qmp import QMPClient
from qmpkit import connect
from test_qmp_linux import _guest_file

from vmforge.block.backend import BlockBackend, create_image
from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing import disk_pattern as dp
from vmforge.testing.oracles import require_program

DISK_BLOCKS = 4096                      # 16 MiB
WRITER_BLOCKS = dp.spread_blocks(DISK_BLOCKS, 96)
#: speed a job starts at, until the guest has written this many blocks during it
SLOW = 64 << 10
WRITES_DURING = 12


def _initial(n: int) -> int:
    """The generation the host laid down: 1 in top.qcow2 every third block, else
    0 from base.qcow2."""
    return 1 if n % 3 == 0 else 0


class Shell:
    """The guest's busybox shell on its console."""

    def __init__(self, console: BufferChar) -> None:
        self.console = console

    def run(self, command: str, until: bytes | re.Pattern[bytes],
            timeout: float = 120) -> str:
        self.console.clear()
        self.console.feed(command.encode() + b"\n")
        m = self.console.wait_for(until, timeout)
        return self.console.output[:m.end()].decode(errors="replace")

    def load(self) -> None:
        self.console.wait_for(b"# ", 120)
        self.run("stty -echo; echo ECHO-OFF", b"ECHO-OFF\r\n")
        self.console.feed(b"cat > /tmp/vmf.sh <<'VMF_EOF'\n" + dp.GUEST_SCRIPT.encode()
                          + b"VMF_EOF\n")
        self.run(". /tmp/vmf.sh; echo VMF-LOADED", b"VMF-LOADED\r\n")

    def count(self) -> int:
        out = self.run("echo VMF-COUNT $(vmf_count 2>/dev/null || echo 0)",
                       re.compile(rb"VMF-COUNT (\d+)\r\n"))
        return int(re.findall(r"VMF-COUNT (\d+)", out)[-1])

    def expect(self) -> dict[int, int]:
        return dp.parse_expect(self.run("vmf_expect", b"VMF-END"))

    def verify(self, expected: dict[int, int]) -> str:
        pairs = " ".join(f"{n}:{g}" for n, g in sorted(expected.items()))
        out = self.run(f"vmf_verify {pairs}", re.compile(rb"VMF-VERIFY ok=\d+ bad=\d+\r\n"),
                       timeout=600)
        return re.findall(r"VMF-VERIFY ok=\d+ bad=\d+", out)[-1]

    def held(self, fn: Any) -> dict[int, int]:
        """Hold the writer, verify what it wrote, let it go; returns the expectation."""
        self.run("vmf_hold", b"VMF-HELD")
        expected = self.expect()
        assert self.verify(expected) == f"VMF-VERIFY ok={len(expected)} bad=0"
        fn(expected)
        self.run("vmf_release", b"VMF-RELEASED")
        return expected

    def finish(self, blocks: Any) -> dict[int, int]:
        """Let the writer write each of ``blocks`` once at least, stop it, verify every
        block it wrote; returns the last generation of each."""
        while self.count() < len(blocks):
            time.sleep(0.5)
        self.run("vmf_stop", b"VMF-STOPPED", 60)
        final = self.expect()
        assert self.verify(final) == f"VMF-VERIFY ok={len(final)} bad=0"
        assert set(final) == set(blocks)
        return final


def _machine(disk: Path, console: BufferChar, sock: Path, fmt: str = "qcow2",
             ) -> tuple[Any, QmpServer]:
    from vmforge_riscv_virt.machine import RiscvVirt

    machine = RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=256 << 20, kernel=_guest_file("linux-riscv64"),
        initrd=_guest_file("initramfs-riscv64"), append="console=ttyS0", serial=[console],
        drives=[DriveSpec.parse(f"file={disk},format={fmt},if=none,id=hd0")],
        devices=[DeviceSpec.parse("virtio-blk-device,drive=hd0")]))
    server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
    machine.start()
    return machine, server


@pytest.fixture
def chain(sockdir: Path) -> Iterator[Path]:
    """base.qcow2 (generation 0 everywhere) <- top.qcow2 (generation 1 on every third
    block)."""
    base, top = sockdir / "base.qcow2", sockdir / "top.qcow2"
    create_image("qcow2", str(base), DISK_BLOCKS * dp.BLOCK)
    with BlockBackend.open(str(base), "qcow2", readonly=False) as bb:
        dp.fill_image(bb, range(DISK_BLOCKS), 0)
    create_image("qcow2", str(top), DISK_BLOCKS * dp.BLOCK, backing_file="base.qcow2",
                 backing_fmt="qcow2")
    with BlockBackend.open(str(top), "qcow2", readonly=False) as bb:
        dp.fill_image(bb, range(0, DISK_BLOCKS, 3), 1)
    yield top


async def _chain(c: QMPClient) -> list[str]:
    (disk,) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
    image, names = disk["inserted"]["image"], []
    while image is not None:
        names.append(Path(image["filename"]).name)
        image = image.get("backing-image")
    return names


def _qemu_img_check(path: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    check = subprocess.run([qemu_img, "check", str(path)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def _check_image(path: Path, expected: dict[int, int], fmt: str = "qcow2") -> None:
    """``qemu-img check`` clean, and every block what it must be, read through
    vmforge.block and read by qemu-img (converted to raw)."""
    _qemu_img_check(path)
    with BlockBackend.open(str(path), fmt) as bb:
        assert dp.verify_image(bb.read, expected, DISK_BLOCKS, _initial) == []
    raw = path.with_suffix(".raw")
    subprocess.run([require_program("qemu-img", "qemu-utils"), "convert", "-f", fmt, "-O",
                    "raw", str(path), str(raw)], check=True)
    with open(raw, "rb") as f:
        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        assert dp.verify_image(read, expected, DISK_BLOCKS, _initial) == []
    raw.unlink()


def _check_between(path: Path, low: dict[int, int], high: dict[int, int]) -> None:
    """A copy left behind while the guest wrote: every block whole, of a generation
    between what the writer had written (``low``) and its last one (``high``)."""
    _qemu_img_check(path)
    with BlockBackend.open(str(path), "qcow2") as bb:
        for n in range(DISK_BLOCKS):
            got = dp.check_block(bb.read(n * dp.BLOCK, dp.BLOCK))
            lo, hi = low.get(n, _initial(n)), high.get(n, _initial(n))
            assert got is not None and got[0] == n and lo <= got[1] <= hi, (n, got, lo, hi)


def test_jobs_while_linux_writes(chain: Path, sockdir: Path) -> None:
    d = sockdir
    console = BufferChar()
    machine, server = _machine(chain, console, d / "vm.qmp")
    shell = Shell(console)
    times: dict[str, float] = {}
    between: dict[int, int] = {}            # what the writer had written before the vmdk mirror
    try:
        shell.load()
        shell.run(f'vmf_start 2 "{" ".join(map(str, WRITER_BLOCKS))}"; echo VMF-STARTED',
                  b"VMF-STARTED")

        async def job(c: QMPClient, name: str, cmd: str, args: dict[str, Any],
                      ready: bool = False) -> None:
            """Start a job slowly; once the guest has written during it, full speed;
            then (if ``ready``) complete it; wait for its end."""
            ident = args.get("job-id", "hd0")
            before = await asyncio.to_thread(shell.count)
            t0 = time.monotonic()
            await c.execute(cmd, {**args, "speed": SLOW})
            while await asyncio.to_thread(shell.count) < before + WRITES_DURING:
                await asyncio.sleep(0.2)
            (info,) = await c.execute("query-block-jobs")
            assert info["status"] == "running" and info["offset"] < info["len"], info
            await c.execute("block-job-set-speed", {"device": ident, "speed": 0})
            if ready:
                await wait_event(c, "BLOCK_JOB_READY", ident, timeout=300)
                await c.execute("block-job-complete", {"device": ident})
            (done,) = [e for e in await wait_event(c, "BLOCK_JOB_COMPLETED", ident,
                                                   timeout=300)
                       if e["event"] == "BLOCK_JOB_COMPLETED"]
            times[name] = time.monotonic() - t0
            assert "error" not in done["data"], done

        async def run() -> dict[int, int]:
            c = await connect(d / "vm.qmp")
            await c.execute("blockdev-snapshot-sync", {
                "device": "hd0", "snapshot-file": str(d / "s1.qcow2"), "format": "qcow2"})
            assert await _chain(c) == ["s1.qcow2", "top.qcow2", "base.qcow2"]
            await job(c, "commit (intermediate)", "block-commit", {
                "device": "hd0", "top": str(d / "top.qcow2"), "job-id": "commit"})
            assert await _chain(c) == ["s1.qcow2", "base.qcow2"]
            await asyncio.to_thread(shell.held, lambda e: None)

            await c.execute("blockdev-snapshot-sync", {
                "device": "hd0", "snapshot-file": str(d / "s2.qcow2"), "format": "qcow2"})
            await job(c, "stream", "block-stream", {
                "device": "hd0", "base": str(d / "base.qcow2"), "job-id": "stream"})
            assert await _chain(c) == ["s2.qcow2", "base.qcow2"]
            await asyncio.to_thread(shell.held, lambda e: None)

            await job(c, "commit (active)", "block-commit", {"device": "hd0"}, ready=True)
            assert await _chain(c) == ["base.qcow2"]
            await asyncio.to_thread(shell.held, lambda e: None)

            # the backup starts while the writer is held: what it must hold is known
            at_start: dict[int, int] = {}

            def start_backup(expected: dict[int, int]) -> None:
                at_start.update(expected)
                asyncio.run_coroutine_threadsafe(c.execute("drive-backup", {
                    "device": "hd0", "target": str(d / "backup.qcow2"), "sync": "full",
                    "format": "qcow2", "speed": SLOW, "job-id": "backup"}),
                    loop).result(60)

            loop = asyncio.get_running_loop()
            before = await asyncio.to_thread(shell.count)
            t0 = time.monotonic()
            await asyncio.to_thread(shell.held, start_backup)
            while await asyncio.to_thread(shell.count) < before + WRITES_DURING:
                await asyncio.sleep(0.2)
            await c.execute("block-job-set-speed", {"device": "backup", "speed": 0})
            await wait_event(c, "BLOCK_JOB_COMPLETED", "backup", timeout=300)
            times["backup"] = time.monotonic() - t0

            await job(c, "mirror", "drive-mirror", {
                "device": "hd0", "target": str(d / "mirror.qcow2"), "sync": "full",
                "format": "qcow2"}, ready=True)
            assert await _chain(c) == ["mirror.qcow2"]
            between.update(await asyncio.to_thread(shell.held, lambda e: None))

            # and on to a vmdk: mirror.qcow2 is left with the disk as it was at the pivot
            await job(c, "mirror to vmdk", "drive-mirror", {
                "device": "hd0", "target": str(d / "mirror.vmdk"), "sync": "full",
                "format": "vmdk"}, ready=True)
            assert await _chain(c) == ["mirror.vmdk"]
            await asyncio.to_thread(shell.held, lambda e: None)
            await c.disconnect()
            _check_image(d / "backup.qcow2", at_start)
            return at_start

        asyncio.run(run())
        final = shell.finish(WRITER_BLOCKS)
    finally:
        machine.stop(10)
        server.close()
    print("job times with the guest writing:",
          ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    _check_image(d / "mirror.vmdk", final, "vmdk")
    _check_between(d / "mirror.qcow2", between, final)

    # a fresh machine given only the last copy
    console = BufferChar()
    machine, server = _machine(d / "mirror.vmdk", console, d / "vm2.qmp", "vmdk")
    try:
        shell = Shell(console)
        shell.load()
        assert shell.verify(final) == f"VMF-VERIFY ok={len(final)} bad=0"
    finally:
        machine.stop(10)
        server.close()
    _check_image(d / "mirror.vmdk", final, "vmdk")
