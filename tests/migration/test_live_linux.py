"""Live migration of a busy Linux guest between two vmforge processes on riscv-virt.

The guest (guests/build.py's kernel and busybox initramfs) runs a counter loop
printing to the console and a writer putting numbered blocks on a virtio-blk
disk (a qcow2 image both processes open: shared storage).  Mid-way it moves to
a second process over tcp: the counter must go on there with no number lost or
repeated, every block the writer wrote must be on the disk afterwards, and the
image must check clean.  A migration to nowhere leaves the source running.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.testing.migration_kit import GuestProcess, free_port, guest_file, riscv_linux_args
from vmforge.testing.oracles import require_program

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = 300


@pytest.fixture
def guest_args(tmp_path: Path) -> list[str]:
    qemu_img = require_program("qemu-img", "qemu-utils")
    disk = tmp_path / "shared.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    return riscv_linux_args(guest_file(ROOT, "linux-riscv64"),
                            guest_file(ROOT, "initramfs-riscv64"),
                            str(disk))


@pytest.fixture
def source(guest_args: list[str], tmp_path: Path) -> Iterator[GuestProcess]:
    src = GuestProcess.vmforge(guest_args, tmp_path / "src.qmp")
    try:
        src.wait_for(b"# ", 180)
        src.type(b"i=0; while true; do i=$((i+1)); echo count-$i; sleep 0.1; done &\n")
        src.wait_for(b"count-5")
        yield src
    finally:
        src.close()


def _counts(text: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"count-(\d+)\r?\n", text)]


def test_busy_guest_moves_and_nothing_is_lost(source: GuestProcess, guest_args: list[str],
                                              tmp_path: Path) -> None:
    src = source
    src.type(f"for n in $(seq 1 {BLOCKS}); do echo blk-$n | dd of=/dev/vda bs=512 seek=$n "
             "conv=notrunc,fsync 2>/dev/null; [ $((n % 40)) = 0 ] && echo wrote-$n; "
             "sleep 0.05; done; "
             "sync; echo writer-$((40+2))\n".encode())
    src.wait_for(b"wrote-40", 120)
    port = free_port()
    dst = GuestProcess.vmforge([*guest_args, "-incoming", f"tcp:127.0.0.1:{port}"],
                               tmp_path / "dst.qmp")
    try:
        assert dst.qmp("query-status")["status"] == "inmigrate"
        assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
        info = src.wait_migration()
        assert info["status"] == "completed", (info, src.stderr, dst.stderr)
        assert info["ram"]["transferred"] > 0 and info["downtime"] >= 0
        assert src.qmp("query-status")["status"] == "postmigrate"
        assert dst.qmp("query-status")["status"] == "running"
        assert b"writer-42" not in src.output, "the writer ended before the migration"
        # the destination holds the disk now: the source cannot go on with it
        assert src.qmp("cont") == {}
        assert src.qmp("query-status")["status"] == "paused"
        assert src.qmp("quit") == {}            # closing its images writes nothing
        assert src.proc.wait(30) == 0
        dst.wait_for(b"writer-42", 300)
        end = dst.wait_for(b"count-", 30)
        dst.wait_for(b"count-", 30, start=end)     # still counting after the writer
        before, after = _counts(bytes(src.output)), _counts(bytes(dst.output))
        assert before and after, (bytes(src.output[-300:]), bytes(dst.output[-300:]))
        # the guest's console output may cut a line at the switch: join the two
        both = _counts(bytes(src.output) + bytes(dst.output))
        assert both == list(range(1, both[-1] + 1)), "a count was lost or repeated"
        assert after[-1] > before[-1] + 3
        assert dst.qmp("quit") == {}
        assert dst.proc.wait(30) == 0
    finally:
        dst.close()
    src.close()
    disk = guest_args[guest_args.index("-drive") + 1].split(",")[0].removeprefix("file=")
    qemu_img = require_program("qemu-img", "qemu-utils")
    check = subprocess.run([qemu_img, "check", disk], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    raw = tmp_path / "disk.raw"
    subprocess.run([qemu_img, "convert", "-O", "raw", disk, str(raw)], check=True)
    data = raw.read_bytes()
    missing = [n for n in range(1, BLOCKS + 1)
               if data[n * 512:n * 512 + 16].split(b"\n")[0] != f"blk-{n}".encode()]
    assert not missing, f"blocks not on the disk: {missing[:20]}"


def test_failed_migration_leaves_the_source_running(source: GuestProcess) -> None:
    src = source
    port = free_port()                          # nobody listens there
    assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
    info = src.wait_migration()
    assert info["status"] == "failed"
    assert "Connection refused" in info["error-desc"]
    assert src.qmp("query-status") == {"status": "running", "singlestep": False,
                                       "running": True}
    last = _counts(bytes(src.output))[-1]
    src.wait_for(f"count-{last + 3}\r\n".encode(), 30)
