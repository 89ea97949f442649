"""Live migration and snapshots of a KVM microvm guest (``-M microvm -accel kvm``).

``guests/count.c`` prints ``count N`` and checks, each step, the word it wrote
into every page of a 1 MiB array the step before: migrated while it counts,
the destination goes on from where the source stopped (the two consoles
together are the one count, nothing lost or repeated) and finds its RAM as the
source left it (the pages KVM's dirty log reported were sent again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.testing import qemu_tools
from vmforge.testing.migration_kit import GuestProcess, free_port
from vmforge.testing.oracles import oracle_missing

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=4"

COUNT = 60
EXPECTED = ("count: start\n" + "".join(f"count {n}\n" for n in range(COUNT))
            + "count: done\n")


def need_kvm() -> None:
    why = kvm_available()
    if why is not None:
        oracle_missing(why)


def count_guest(guest: Callable[..., Path], *defines: str) -> Path:
    need_kvm()
    return guest("count", f"COUNT={COUNT}", *defines)


@pytest.fixture
def kernel(guest: Callable[..., Path]) -> Path:
    return count_guest(guest)


@pytest.fixture
def procs() -> Iterator[list[GuestProcess]]:
    started: list[GuestProcess] = []
    yield started
    for p in started:
        p.close()


def vmforge(procs: list[GuestProcess], tmp_path: Path, name: str, kernel: Path,
            *extra: str, memory: str = "64M", smp: int = 1,
            machine: str = "microvm") -> GuestProcess:
    p = GuestProcess.vmforge(["-M", machine, "-accel", "kvm", "-m", memory, "-smp", str(smp),
                              "-display", "none", "-serial", "stdio", "-no-reboot",
                              "-kernel", str(kernel), "-device", DEBUG_EXIT, *extra],
                             tmp_path / f"{name}.qmp")
    procs.append(p)
    return p


def text(p: GuestProcess) -> str:
    return bytes(p.output).decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("ticks, smp", [(False, 1), (True, 2)], ids=["busy", "pit-ticks-smp2"])
def test_live_migration_goes_on_counting(guest: Callable[..., Path], procs: list[GuestProcess],
                                         tmp_path: Path, ticks: bool, smp: int) -> None:
    """(With -smp 2 the second vCPU, never started, goes across waiting for its SIPI.)"""
    kernel = count_guest(guest, *(["TICKS=1"] if ticks else []))
    src = vmforge(procs, tmp_path, "src", kernel, smp=smp)
    src.wait_for(b"count 5\n", timeout=60)
    port = free_port()
    dst = vmforge(procs, tmp_path, "dst", kernel, "-incoming", f"tcp:127.0.0.1:{port}",
                  smp=smp)
    dst.qmp("query-status")                 # listening
    assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
    info = src.wait_migration(timeout=120)
    assert info["status"] == "completed", info
    assert info["ram"]["dirty-sync-count"] >= 2
    dst.wait_for(b"count: done\n", timeout=120)
    assert dst.proc.wait(30) == 67, dst.stderr
    assert "count: done" not in text(src) and text(dst), text(src)
    assert text(src) + text(dst) == EXPECTED, (text(src), text(dst))


@pytest.mark.parametrize("ticks", [False, True], ids=["busy", "pit-ticks"])
def test_snapshot_in_qcow2_then_loadvm(guest: Callable[..., Path], procs: list[GuestProcess],
                                       tmp_path: Path, ticks: bool) -> None:
    kernel = count_guest(guest, *(["TICKS=1"] if ticks else []))
    disk = tmp_path / "disk.qcow2"
    qemu_tools.qemu_img("create", "-f", "qcow2", str(disk), "1M")
    drive = ["-drive", f"file={disk},format=qcow2,if=none,id=hd0",
             "-device", "virtio-blk-device,drive=hd0"]
    first = vmforge(procs, tmp_path, "first", kernel, *drive)
    first.wait_for(b"count 5\n", timeout=60)
    first.qmp("stop")
    saved = text(first)
    reply = first.qmp("human-monitor-command", **{"command-line": "savevm s1"})
    assert reply == "", reply
    first.qmp("cont")
    first.wait_for(b"count: done\n", timeout=120)    # it runs on after the snapshot
    assert first.proc.wait(30) == 67
    second = vmforge(procs, tmp_path, "second", kernel, *drive, "-loadvm", "s1")
    second.wait_for(b"count: done\n", timeout=120)
    assert second.proc.wait(30) == 67, second.stderr
    assert saved + text(second) == EXPECTED, (saved, text(second))


def test_live_migration_with_virtio_blk_requests(guest: Callable[..., Path],
                                                 procs: list[GuestProcess],
                                                 tmp_path: Path) -> None:
    """guests/virtio_blk.c with LOOP: writes a sector, reads it back, prints
    "blk I ok", again and again on the one shared disk; migrated meanwhile (the
    source drains its requests, the destination takes the rings over), every
    round is there once, in order, and the disk holds the last round's data."""
    need_kvm()
    kernel = guest("virtio_blk", "LOOP=60")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    drive = ["-append", "console=ttyS0",
             "-drive", f"file={disk},format=raw,if=none,id=d0",
             "-device", "virtio-blk-device,drive=d0"]
    src = vmforge(procs, tmp_path, "src", kernel, *drive)
    src.wait_for(b"blk 5 ok\n", timeout=60)
    port = free_port()
    dst = vmforge(procs, tmp_path, "dst", kernel, *drive, "-incoming", f"tcp:127.0.0.1:{port}")
    dst.qmp("query-status")
    assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
    assert src.wait_migration(timeout=120)["status"] == "completed"
    try:
        dst.wait_for(b"bye\n", timeout=120)
    except TimeoutError as exc:     # (the state to say when it hangs: a lost kick did so)
        raise AssertionError(f"{exc}; destination: {dst.qmp('query-status')}, "
                             f"{dst.qmp('query-migrate')}") from exc
    assert dst.proc.wait(30) == (0x22 << 1) | 1, dst.stderr
    rounds = [line for line in (text(src) + text(dst)).splitlines() if line.startswith("blk ")]
    assert rounds == [f"blk {i} ok" for i in range(60)], (text(src), text(dst))
    assert "blk" in text(dst) and "bye" not in text(src)
    data = disk.read_bytes()
    for i in range(60):
        assert data[(3 + i) * 512:(4 + i) * 512] == bytes((i + j) & 0xFF for j in range(512))


def test_refused_state_leaves_the_source_counting(kernel: Path, procs: list[GuestProcess],
                                                     tmp_path: Path) -> None:
    """A destination without a PIT refuses the state at the end (the RAM went
    over): the source, its vCPUs parked by then, runs on and counts to the end."""
    src = vmforge(procs, tmp_path, "src", kernel)
    src.wait_for(b"count 5\n", timeout=60)
    port = free_port()
    dst = vmforge(procs, tmp_path, "dst", kernel, "-incoming", f"tcp:127.0.0.1:{port}",
                  machine="microvm,pit=off")
    dst.qmp("query-status")
    assert src.qmp("migrate", uri=f"tcp:127.0.0.1:{port}") == {}
    info = src.wait_migration(timeout=120)
    assert info["status"] == "failed", info
    assert "did not take the migration stream" in info["error-desc"], info
    assert dst.proc.wait(30) == 1
    dst.close()                             # (its stderr read to the end)
    assert "has none (pit=off)" in dst.stderr.decode(errors="replace")
    src.wait_for(b"count: done\n", timeout=120)
    assert src.proc.wait(30) == 67, src.stderr
    assert text(src) == EXPECTED


@pytest.mark.parametrize("other", [("-smp", "2"), ("-m", "128M")])
def test_stream_of_another_configuration_refused(kernel: Path, procs: list[GuestProcess],
                                                 tmp_path: Path, other: tuple[str, str]) -> None:
    stream = tmp_path / "state.bin"
    src = vmforge(procs, tmp_path, "src", kernel)
    src.wait_for(b"count 2\n", timeout=60)
    assert src.qmp("migrate", uri=f"file:{stream}") == {}
    assert src.wait_migration(timeout=120)["status"] == "completed"
    kw = {"memory": "128M"} if other[0] == "-m" else {"smp": 2}
    dst = vmforge(procs, tmp_path, "dst", kernel, "-incoming", f"file:{stream}", **kw)
    status = dst.proc.wait(60)
    dst.close()
    err = dst.stderr.decode(errors="replace")
    assert status == 1, err
    word = "CPUs" if other[0] == "-smp" else "RAM"
    assert word in err and "Traceback" not in err, err
    assert "count" not in text(dst)
