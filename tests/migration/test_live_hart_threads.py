"""Live migration of a Linux guest on ``-smp 2`` whose harts run on host threads
(riscv-virt's default there): two processes rewrite a file in the guest's RAM
(tmpfs) on both harts all through the migration; on the destination they go on,
stop cleanly, and each file holds exactly the text its last pass wrote (a page
the source's harts wrote after a dirty-log take and that never reached the
destination would leave it stale there)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.testing.migration_kit import GuestProcess, free_port, guest_file, riscv_linux_args

ROOT = Path(__file__).resolve().parents[2]

# each writer rewrites /tmp/$1 with `seq $n $((n + 3000))` (about 16 KiB) until
# /tmp/stop exists, then says how far it got
WRITERS = (b"w() { n=0; while [ ! -e /tmp/stop ]; do n=$((n+1)); seq $n $((n+3000)) > /tmp/$1; "
           b"done; echo stopped-$1-$n; }; w a & w b &\n")
CHECK = (b"for f in a b; do k=$(head -n 1 /tmp/$f); seq $k $((k+3000)) | cmp - /tmp/$f "
         b"&& echo intact-$f; done\n")


@pytest.fixture
def guest_args() -> list[str]:
    return [*riscv_linux_args(guest_file(ROOT, "linux-riscv64"),
                              guest_file(ROOT, "initramfs-riscv64"), None),
            "-smp", "2"]


@pytest.fixture
def source(guest_args: list[str], tmp_path: Path) -> Iterator[GuestProcess]:
    src = GuestProcess.vmforge(guest_args, tmp_path / "src.qmp")
    try:
        src.wait_for(b"# ", 180)
        src.type(b"grep -c ^processor /proc/cpuinfo\n")
        src.wait_for(b"\n2\r\n")
        src.type(WRITERS)
        src.type(b"sleep 1; ls /tmp\n")            # both writers are at work
        src.wait_for(b"a  b", 60)
        yield src
    finally:
        src.close()


def test_guest_writing_on_both_harts_moves_intact(source: GuestProcess,
                                                  guest_args: list[str],
                                                  tmp_path: Path) -> None:
    src = source
    port = free_port()
    dst = GuestProcess.vmforge([*guest_args, "-incoming", f"tcp:127.0.0.1:{port}"],
                               tmp_path / "dst.qmp")
    try:
        assert dst.qmp("query-status")["status"] == "inmigrate"
        assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
        info = src.wait_migration()
        assert info["status"] == "completed", (info, src.stderr, dst.stderr)
        assert info["ram"]["dirty-sync-count"] >= 2, info
        assert dst.qmp("query-status")["status"] == "running"
        assert not re.search(rb"stopped-[ab]-\d", bytes(src.output)), \
            "the writers ended before the migration"
        dst.type(b"touch /tmp/stop; wait; " + CHECK)
        dst.wait_for(b"intact-b", 120)
        out = bytes(dst.output)
        passes = [int(n) for n in re.findall(rb"stopped-[ab]-(\d+)", out)]
        assert len(passes) == 2 and min(passes) > 1, out[-500:]
        assert b"intact-a" in out, out[-800:]
        assert dst.qmp("quit") == {}
        assert dst.proc.wait(30) == 0
    finally:
        dst.close()
