"""The migration stream is checked: a destination given a stream of another
format version, another machine configuration, cut short, corrupt or not a
stream at all says why on one line, exits with status 1 and never runs the
guest; a good stream (``file:`` out, ``-incoming exec:cat PATH`` in) runs.  The
source keeps running when its destination goes away mid-way or it is cancelled."""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.migration.channel import MAGIC
from vmforge.testing.migration_kit import GuestProcess, free_port, guest_file, riscv_linux_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def args() -> list[str]:
    return riscv_linux_args(guest_file(ROOT, "linux-riscv64"),
                            guest_file(ROOT, "initramfs-riscv64"), None, memory=128)


@pytest.fixture(scope="module")
def source(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestProcess]:
    d = tmp_path_factory.mktemp("src")
    src = GuestProcess.vmforge(args, d / "src.qmp")
    try:
        src.wait_for(b"# ", 180)
        src.type(b"i=0; while true; do i=$((i+1)); echo count-$i; sleep 0.1; done &\n")
        src.wait_for(b"count-3")
        yield src
    finally:
        src.close()


@pytest.fixture(scope="module")
def stream(source: GuestProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "vm.mig"
    assert source.qmp("migrate", uri=f"file:{path}") == {}
    info = source.wait_migration()
    assert info["status"] == "completed", info
    assert source.qmp("query-status")["status"] == "postmigrate"
    assert source.qmp("cont") == {}           # QEMU lets a migrated-away guest go on
    return path


def _incoming(args: list[str], tmp_path: Path, uri: str) -> GuestProcess:
    return GuestProcess.vmforge([*args, "-incoming", uri], tmp_path / "dst.qmp")


def _refused(args: list[str], tmp_path: Path, data: bytes, extra: list[str] = ()) -> bytes:
    bad = tmp_path / "bad.mig"
    bad.write_bytes(data)
    dst = GuestProcess.vmforge([*args, *extra, "-incoming", f"file:{bad}"], tmp_path / "d.qmp")
    try:
        assert dst.proc.wait(60) == 1
    finally:
        dst.close()
    assert dst.output == b"", "the destination ran the guest"
    lines = dst.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in dst.stderr.decode(), dst.stderr
    return dst.stderr


def test_good_stream_runs_where_the_source_was(args: list[str], stream: Path,
                                               tmp_path: Path) -> None:
    dst = _incoming(args, tmp_path, f"exec:cat {stream}")
    try:
        for _ in range(600):
            try:
                status = dst.qmp("query-status")["status"]
            except OSError:
                dst.proc.wait(10)
                dst.close()
                raise AssertionError(dst.stderr) from None
            if status == "running":
                break
            time.sleep(0.05)
        assert dst.qmp("query-status")["running"] is True
        dst.type(b"echo sum-$((6*7))\n")
        dst.wait_for(b"sum-42", 30)
        assert dst.qmp("query-migrate") == {"status": "completed"}
    finally:
        dst.close()


def test_truncated_stream_is_refused(args: list[str], stream: Path, tmp_path: Path) -> None:
    data = stream.read_bytes()
    err = _refused(args, tmp_path, data[:len(data) // 2])
    assert b"truncated" in err


def test_corrupt_stream_is_refused(args: list[str], stream: Path, tmp_path: Path) -> None:
    data = bytearray(stream.read_bytes())
    data[len(data) // 3] ^= 0x40
    err = _refused(args, tmp_path, bytes(data))
    assert b"corrupt" in err


def test_other_version_is_refused(args: list[str], stream: Path, tmp_path: Path) -> None:
    data = bytearray(stream.read_bytes())
    struct.pack_into("<I", data, len(MAGIC), 99)
    err = _refused(args, tmp_path, bytes(data))
    assert b"format version 99" in err


def test_other_configuration_is_refused(args: list[str], stream: Path, tmp_path: Path) -> None:
    other = [*args]
    other[other.index("-m") + 1] = "256"
    err = _refused(other, tmp_path, stream.read_bytes())
    assert b"does not match this one" in err and b"256 MiB" in err


def test_not_a_stream_is_refused(args: list[str], tmp_path: Path) -> None:
    err = _refused(args, tmp_path, b"\x7fELF" + bytes(4000))
    assert b"not a vmforge migration stream" in err


def test_destination_dying_midway_leaves_the_source_running(
        source: GuestProcess, args: list[str], stream: Path, tmp_path: Path) -> None:
    port = free_port()
    dst = _incoming(args, tmp_path, f"tcp:127.0.0.1:{port}")
    try:
        dst.qmp("query-status")
        source.qmp("migrate-set-parameters", **{"max-bandwidth": 2 << 20})   # slow
        assert source.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
        while source.qmp("query-migrate")["status"] != "active":
            time.sleep(0.05)
        time.sleep(0.5)
        dst.proc.kill()
        info = source.wait_migration()
    finally:
        dst.close()
        source.qmp("migrate-set-parameters", **{"max-bandwidth": 134217728})
    assert info["status"] == "failed", info
    assert source.qmp("query-status")["status"] == "running"
    last = int(bytes(source.output).rsplit(b"count-", 1)[1].split(b"\r")[0])
    source.wait_for(f"count-{last + 3}\r\n".encode(), 30)


def test_cancel_leaves_the_source_running(source: GuestProcess, stream: Path,
                                          tmp_path: Path) -> None:
    source.qmp("migrate-set-capabilities", capabilities=[{"capability": "events",
                                                           "state": True}])
    source.qmp("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
    try:
        assert source.qmp("migrate", uri=f"exec:cat > {tmp_path / 'x.mig'}") == {}
        while source.qmp("query-migrate")["status"] != "active":
            time.sleep(0.05)
        assert source.qmp("migrate_cancel") == {}
        info = source.wait_migration()
    finally:
        source.qmp("migrate-set-parameters", **{"max-bandwidth": 134217728})
    assert info == {"status": "cancelled"}
    assert source.qmp("query-status")["status"] == "running"
    source.qmp("query-version")       # collect the events sent meanwhile
    statuses = [e["data"]["status"] for e in source.events if e["event"] == "MIGRATION"]
    assert statuses[-4:] == ["setup", "active", "cancelling", "cancelled"]
    assert shutil.which("cat")


def test_defer_then_migrate_incoming_with_S_stays_paused(args: list[str], stream: Path,
                                                         tmp_path: Path) -> None:
    dst = GuestProcess.vmforge([*args, "-S", "-incoming", "defer"], tmp_path / "dst.qmp")
    try:
        assert dst.qmp("query-status")["status"] == "inmigrate"
        assert dst.qmp("query-migrate") == {}
        assert dst.qmp("migrate-incoming", uri=f"exec:cat {stream}") == {}
        assert dst.wait_migration() == {"status": "completed"}
        assert dst.qmp("query-status") == {"status": "paused", "singlestep": False,
                                           "running": False}
        assert dst.qmp("cont") == {}
        dst.type(b"echo sum-$((6*7))\n")
        dst.wait_for(b"sum-42", 30)
    finally:
        dst.close()


def test_human_monitor_migrate_and_info_migrate(source: GuestProcess, stream: Path,
                                                tmp_path: Path) -> None:
    def hmp(line: str) -> str:
        return str(source.qmp("human-monitor-command", **{"command-line": line}))

    assert hmp(f"migrate file:{tmp_path / 'hmp.mig'}").strip() == ""
    assert source.wait_migration()["status"] == "completed"
    info = hmp("info migrate")
    assert "Migration status: completed" in info and "downtime:" in info
    assert source.qmp("query-status")["status"] == "postmigrate"
    assert hmp("migrate file:/nonexistent/x").strip() == (
        "Error: Can't migrate the vm that was paused due to previous migration")
    assert source.qmp("cont") == {}
    assert (tmp_path / "hmp.mig").read_bytes().startswith(MAGIC)
