"""parallels images against qemu-img and qemu-io: the same files from the same
writes, both directions, the in-use flag, check, info, convert."""

from __future__ import annotations

import json
import os
import struct
from functools import partial
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, parse_size
from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import info_json, needs_qemu, pattern, qemu_img, vmforge_img
from vmforge_parallels import Parallels

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="parallels")
to_raw = partial(qemu_tools.to_raw, fmt="parallels")
MiB = 1 << 20

#: (offset, length, pattern): partial clusters, runs of clusters, out of order
WRITES = ((100, 5000, 0x11), (3 * MiB + 512, 70144, 0x22), (MiB - 1024, 4096, 0x33),
          (5 * MiB + 512, 512, 0x44), (100 + 4096, 512, 0x55), (2 * MiB - 3000, 300_000, 0x66))


def _our_writes(img: Path) -> None:
    with Parallels.open(str(img), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)


@pytest.mark.parametrize("size", ["512", "3000001", "7M", "5G"])
@pytest.mark.parametrize("cluster", [None, "4K", "1000", "256K"])
def test_create_is_byte_identical_to_qemu_img(tmp_path: Path, size: str,
                                               cluster: str | None) -> None:
    ours, theirs = tmp_path / "ours.hds", tmp_path / "theirs.hds"
    opts = {"cluster_size": cluster} if cluster else {}
    Parallels.create(str(ours), parse_size(size), **opts)
    args = ["-o", f"cluster_size={cluster}"] if cluster else []
    qemu_img("create", "-q", "-f", "parallels", *args, str(theirs), size)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("cluster", [None, "4K"])
def test_writes_lay_out_the_file_as_qemu(tmp_path: Path, cluster: str | None) -> None:
    """Clusters appended in the order first written, the BAT pointing at them in
    clusters, the in-use flag cleared and the file cut at close."""
    ours, theirs = tmp_path / "ours.hds", tmp_path / "theirs.hds"
    args = ["-o", f"cluster_size={cluster}"] if cluster else []
    for img in (ours, theirs):
        qemu_img("create", "-q", "-f", "parallels", *args, str(img), "7M")
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
    _our_writes(ours)
    assert ours.read_bytes() == theirs.read_bytes()


def test_a_new_cluster_at_the_end_is_written_data_only(tmp_path: Path) -> None:
    """A cluster appended to the file gets its data written and the file extended to
    its end (a hole for the rest, as QEMU's preallocation by truncation leaves it),
    not a cluster of zeros written then the data over it; the file reads the same."""
    ours, theirs = tmp_path / "ours.hds", tmp_path / "theirs.hds"
    for img in (ours, theirs):
        qemu_img("create", "-q", "-f", "parallels", str(img), "7M")
    start = ours.stat().st_size
    _our_writes(ours)
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.stat().st_size == start + 5 * MiB
    # WRITES' data: < 400 KiB in 5 clusters of 1 MiB, the rest holes
    assert ours.stat().st_blocks * 512 < start + MiB


def test_qemu_images_read_byte_for_byte(tmp_path: Path) -> None:
    for cluster in ("1M", "4K", "1000"):
        img = tmp_path / f"q{cluster}.hds"
        qemu_img("create", "-q", "-f", "parallels", "-o", f"cluster_size={cluster}",
                 str(img), "7M")
        qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
        qemu_io(img, "write -z 100 512", "write -P 0x77 6M 4096")
        expect = to_raw(img, tmp_path / "x.raw")
        with Parallels.open(str(img)) as drv:
            assert drv.read(0, drv.size) == expect
            for e in drv.block_status(0, drv.size):
                if e.is_data:
                    with open(img, "rb") as f:
                        f.seek(e.host_offset)
                        assert f.read(e.length) == expect[e.offset:e.end]
                else:
                    assert not any(expect[e.offset:e.end])


def test_our_images_accepted_by_qemu(tmp_path: Path) -> None:
    img, model_path = tmp_path / "ours.hds", tmp_path / "model.raw"
    Parallels.create(str(img), 9 * MiB + 512, cluster_size=65536)
    model = bytearray(9 * MiB + 512)
    with Parallels.open(str(img), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)
            model[off:off + n] = bytes([p]) * n
        drv.write_zeroes(3 * MiB, 65536)
        model[3 * MiB:3 * MiB + 65536] = bytes(65536)
        drv.write(9 * MiB, b"\x77" * 512)
        model[9 * MiB:] = b"\x77" * 512
    model_path.write_bytes(model)
    r = qemu_img("check", "-f", "parallels", str(img), check=False)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr
    qemu_img("compare", "-f", "parallels", "-F", "raw", str(img), str(model_path))
    out = qemu_io(img, "read -P 0x11 100 4096", "read -P 0x77 9M 512", "read -P 0 0 100")
    assert "read 4096/4096" in out and "read 512/512" in out
    mine, theirs = info_json("vmforge", img, "parallels"), info_json("qemu-img", img,
                                                                      "parallels")
    for key in ("virtual-size", "format"):
        assert mine[key] == theirs[key], key
    ours_check = vmforge_img("check", "--output", "json", "-f", "parallels", str(img))
    theirs_check = qemu_img("check", "--output", "json", "-f", "parallels", str(img))
    a, b = json.loads(ours_check.stdout), json.loads(theirs_check.stdout)
    for key in ("image-end-offset", "total-clusters", "allocated-clusters",
                "fragmented-clusters"):
        assert a.get(key, 0) == b.get(key, 0), key


def test_in_use_flag_as_qemu(tmp_path: Path) -> None:
    img = tmp_path / "crash.hds"
    Parallels.create(str(img), 4 * MiB)
    drv = Parallels.open(str(img), readonly=False)
    drv.write(0, b"\x42" * 5000)
    assert struct.unpack_from("<I", img.read_bytes(), 44)[0] == 0x746F6E59
    # while it is open for writing, qemu-img sees what a crash would leave
    r = qemu_img("check", "-U", "-f", "parallels", str(img), check=False)
    assert r.returncode == 2 and "not closed correctly" in r.stderr
    drv.close()
    assert struct.unpack_from("<I", img.read_bytes(), 44)[0] == 0
    with open(img, "r+b") as f:   # a crash: left in use, with preallocated space
        f.seek(44)
        f.write(struct.pack("<I", 0x746F6E59))
        f.truncate(os.path.getsize(img) + 3 * MiB)
    with pytest.raises(BlockError, match="not closed correctly"):
        Parallels.open(str(img), readonly=False)
    with Parallels.open(str(img)) as ro:   # read-only is fine
        assert ro.info().dirty and ro.read(0, 5000) == b"\x42" * 5000
        res = ro.check()
        assert res.corruptions == 1 and res.leaks == 3
    r = vmforge_img("check", "-f", "parallels", str(img), check=False)
    theirs = qemu_img("check", "-f", "parallels", str(img), check=False)
    assert r.returncode == theirs.returncode == 2
    r = vmforge_img("check", "-r", "all", "-f", "parallels", str(img), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert qemu_img("check", "-f", "parallels", str(img), check=False).returncode == 0
    qemu_io(img, "write -P 0x43 5000 100")   # qemu writes to it again
    with Parallels.open(str(img), readonly=False) as drv:
        assert drv.read(0, 5100) == b"\x42" * 5000 + b"\x43" * 100


def test_leaks_repaired_like_qemu(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.hds", tmp_path / "theirs.hds"
    for img in (ours, theirs):
        Parallels.create(str(img), 4 * MiB)
        qemu_io(img, "write -P 0x5 0 4096")
        with open(img, "ab") as f:
            f.write(b"\xaa" * (MiB + 10))
    assert qemu_img("check", "-f", "parallels", str(ours), check=False).returncode == 3
    assert vmforge_img("check", "-f", "parallels", str(ours), check=False).returncode == 3
    qemu_img("check", "-r", "leaks", "-f", "parallels", str(theirs))
    vmforge_img("check", "-r", "leaks", "-f", "parallels", str(ours))
    assert ours.read_bytes() == theirs.read_bytes()


def test_old_magic_images_read(tmp_path: Path) -> None:
    """A "WithoutFreeSpace" image: BAT entries in sectors, data offset computed."""
    cs, n = 4096, 16
    data = pattern(cs * 3, 4)
    body = bytearray(struct.pack("<16sIIIIIQIIIQ", b"WithoutFreeSpace", 2, 16, 1, 8, n,
                                 n * 8, 0, 0, 0, 0))
    start = -(-(64 + 4 * n) // 512) * 512
    bat = [0] * n
    for k, i in enumerate((5, 0, 9)):
        bat[i] = (start + k * cs) // 512
    body += struct.pack(f"<{n}I", *bat)
    body = body.ljust(start, b"\0") + data
    img = tmp_path / "old.hds"
    img.write_bytes(body)
    expect = to_raw(img, tmp_path / "old.raw")
    with Parallels.open(str(img)) as drv:
        assert drv.read(0, drv.size) == expect
        assert drv.read(5 * cs, cs) == data[:cs] and drv.read(9 * cs, cs) == data[2 * cs:]


def test_convert_both_ways(tmp_path: Path) -> None:
    qemu_tools.assert_raw_converts_both_ways("parallels", "hds", tmp_path)


def test_map_as_qemu_img(tmp_path: Path) -> None:
    """``map``: clusters never written are zero and not present (QEMU's block status
    gives nothing there and the block layer makes it zero), in JSON and in words."""
    img = tmp_path / "m.hds"
    qemu_img("create", "-q", "-f", "parallels", str(img), "8M")
    qemu_io(img, "write -P 1 1M 64k", "write -z 3M 64k")
    for extra in ([], ["--output", "json"]):
        want = qemu_img("map", "-f", "parallels", *extra, str(img)).stdout
        assert vmforge_img("map", "-f", "parallels", *extra, str(img)).stdout == want
    assert '"present": false, "zero": true' in want
