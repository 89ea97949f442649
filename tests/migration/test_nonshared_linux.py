"""Live migration with non-shared storage, driven as libvirt drives QEMU: the
destination (``-incoming tcp:...``, paused: ``-S``) has its own empty copy of the
disk and exports it (``nbd-server-start``, ``nbd-server-add writable=true``); the
source mirrors its disk into that export (``drive-mirror`` mode=existing sync=full),
waits for BLOCK_JOB_READY, migrates, then ``block-job-cancel`` (a ready mirror
completes without a pivot); the destination stops its NBD server and continues.

A busybox guest on riscv-virt writes :mod:`vmforge.testing.disk_pattern`'s
checksummed blocks all along: after the move the destination's guest verifies every
block it wrote (before and after), the two images compare equal at the switch
(qemu-img compare), and the host checks the destination's image block by block."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmforge.block.backend import BlockBackend, create_image
from vmforge.testing import disk_pattern as dp
from vmforge.testing.migration_kit import GuestProcess, free_port, guest_file, riscv_linux_args
from vmforge.testing.oracles import require_program

ROOT = Path(__file__).resolve().parents[2]
DISK_BLOCKS = 4096                          # 16 MiB
WRITER_BLOCKS = dp.spread_blocks(DISK_BLOCKS, 48)


def run(guest: GuestProcess, command: str, until: bytes | re.Pattern[bytes],
        timeout: float = 120) -> str:
    """Type ``command`` into the guest's shell; its output up to ``until``."""
    start = len(guest.output)
    guest.type(command.encode() + b"\n")
    deadline = time.monotonic() + timeout
    pattern = until if isinstance(until, re.Pattern) else re.compile(re.escape(until))
    while True:
        m = pattern.search(bytes(guest.output), start)
        if m:
            return bytes(guest.output[start:m.end()]).decode(errors="replace")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{until!r} not seen after {command!r}: "
                               f"{bytes(guest.output[-300:])!r} {guest.stderr[-300:]!r}")
        time.sleep(0.05)


def count(guest: GuestProcess) -> int:
    out = run(guest, "echo VMF-COUNT $(vmf_count 2>/dev/null || echo 0)",
              re.compile(rb"VMF-COUNT (\d+)\r\n"))
    return int(re.findall(r"VMF-COUNT (\d+)", out)[-1])


def wait_job(guest: GuestProcess, pred: Any, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = guest.qmp("query-block-jobs")
        if pred(jobs):
            return list(jobs)
        assert time.monotonic() < deadline, (jobs, guest.events[-8:], guest.stderr[-2000:])
        time.sleep(0.1)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The source's disk (generation 0 in every block) and the destination's empty
    copy of the same size."""
    src, dst = tmp_path / "src.qcow2", tmp_path / "dst.qcow2"
    create_image("qcow2", str(src), DISK_BLOCKS * dp.BLOCK)
    with BlockBackend.open(str(src), "qcow2", readonly=False) as bb:
        dp.fill_image(bb, range(DISK_BLOCKS), 0)
    create_image("qcow2", str(dst), DISK_BLOCKS * dp.BLOCK)
    yield src, dst


def test_migration_with_nonshared_storage(disks: tuple[Path, Path], tmp_path: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    src_disk, dst_disk = disks
    kernel, initrd = guest_file(ROOT, "linux-riscv64"), guest_file(ROOT, "initramfs-riscv64")
    src = GuestProcess.vmforge(riscv_linux_args(kernel, initrd, str(src_disk)),
                               tmp_path / "src.qmp")
    dst: GuestProcess | None = None
    try:
        src.wait_for(b"# ", 180)
        run(src, "stty -echo; echo ECHO-OFF", b"ECHO-OFF\r\n")
        src.type(b"cat > /tmp/vmf.sh <<'VMF_EOF'\n" + dp.GUEST_SCRIPT.encode() + b"VMF_EOF\n")
        run(src, ". /tmp/vmf.sh; echo VMF-LOADED", b"VMF-LOADED\r\n")
        run(src, f'vmf_start 1 "{" ".join(map(str, WRITER_BLOCKS))}"; echo VMF-STARTED',
            b"VMF-STARTED\r\n")
        while count(src) < 10:
            time.sleep(0.2)

        # the destination: its own empty disk, paused, exporting that disk
        port, nbd_port = free_port(), free_port()
        dst = GuestProcess.vmforge(
            [*riscv_linux_args(kernel, initrd, str(dst_disk)), "-S",
             "-incoming", f"tcp:127.0.0.1:{port}"], tmp_path / "dst.qmp")
        assert dst.qmp("query-status")["status"] == "inmigrate"
        assert dst.qmp("nbd-server-start", addr={"type": "inet", "data": {
            "host": "127.0.0.1", "port": str(nbd_port)}}) == {}
        assert dst.qmp("nbd-server-add", device="hd0", writable=True) == {}

        # the source mirrors its disk into the export, while the guest writes
        assert src.qmp("drive-mirror", **{"device": "hd0", "job-id": "drive-hd0"},
                       target=f"nbd:127.0.0.1:{nbd_port}:exportname=hd0", format="raw",
                       sync="full", mode="existing") == {}
        wait_job(src, lambda jobs: jobs and jobs[0]["ready"])
        written = count(src)
        while count(src) < written + 5:               # writes mirrored while ready
            time.sleep(0.2)
        assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
        info = src.wait_migration()
        assert info["status"] == "completed", (info, src.stderr, dst.stderr)
        assert src.qmp("query-status")["status"] == "postmigrate"
        assert src.qmp("block-job-cancel", device="drive-hd0") == {}
        # (the job's end event may follow the reply that no longer lists it)
        wait_job(src, lambda jobs: not jobs and any(
            e["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") for e in src.events))
        events = [e["event"] for e in src.events]
        assert "BLOCK_JOB_READY" in events and "BLOCK_JOB_COMPLETED" in events, events
        assert "BLOCK_JOB_CANCELLED" not in events
        assert dst.qmp("nbd-server-stop") == {}

        # at the switch both images hold the same disk
        r = subprocess.run([qemu_img, "compare", "-U", "-f", "qcow2", "-F", "qcow2",
                            str(src_disk), str(dst_disk)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

        # the destination goes on: the writer keeps writing there, then every block
        # it ever wrote is verified by the guest
        assert dst.qmp("cont") == {}
        assert dst.qmp("query-status")["status"] == "running"
        moved = count(dst)
        assert moved >= written + 5
        while count(dst) < moved + 10:
            time.sleep(0.2)
        run(dst, "vmf_stop", b"VMF-STOPPED")
        expected = dp.parse_expect(run(dst, "vmf_expect", b"VMF-END"))
        pairs = " ".join(f"{n}:{g}" for n, g in sorted(expected.items()))
        out = run(dst, f"vmf_verify {pairs}", re.compile(rb"VMF-VERIFY ok=\d+ bad=\d+\r\n"),
                  timeout=600)
        assert re.findall(r"VMF-VERIFY ok=\d+ bad=\d+", out)[-1] == \
            f"VMF-VERIFY ok={len(expected)} bad=0", out
        run(dst, "sync; echo SYNCED", b"SYNCED")
        assert dst.qmp("quit") == {}
        assert dst.proc.wait(30) == 0
    finally:
        if dst is not None:
            dst.close()
        src.close()
    check = subprocess.run([qemu_img, "check", str(dst_disk)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with BlockBackend.open(str(dst_disk), "qcow2") as bb:
        assert dp.verify_image(bb.read, expected, DISK_BLOCKS, lambda n: 0) == []
