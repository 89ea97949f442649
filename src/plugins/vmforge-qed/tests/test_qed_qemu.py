"""qed images against qemu-img and qemu-io: the same files from the same writes,
both directions, zero clusters, backing files, info, check, convert."""

from __future__ import annotations

import json
import os
import shutil
import struct
from functools import partial
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError, parse_size
from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import info_json, needs_qemu, pattern, qemu_img, vmforge_img
from vmforge_qed import Qed

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="qed")
to_raw = partial(qemu_tools.to_raw, fmt="qed")
MiB = 1 << 20

#: (offset, length, pattern): writes both tools do alike (partial clusters, runs of
#: clusters, a run across an L2 table's end with 4 KiB clusters and 1-cluster tables)
WRITES = ((100, 5000, 0x11), (512 * 1000, 70144, 0x22), (2 * MiB - 1024, 4096, 0x33),
          (5 * MiB + 512, 512, 0x44), (512 * 1000 + 4096, 512, 0x55),
          (2 * MiB - 3000, 300_000, 0x66))


def _qemu_writes(img: Path, fmt: str = "qed") -> None:
    qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES), fmt=fmt)


def _our_writes(img: Path) -> None:
    with Qed.open(str(img), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)


@pytest.mark.parametrize("size", ["512", "3000001", "7M", "5G"])
@pytest.mark.parametrize("opts", [{}, {"cluster_size": "4K", "table_size": "2"},
                                  {"cluster_size": "1M", "table_size": "16"}])
@pytest.mark.parametrize("backing", [None, ("base.raw", "raw"), ("dir/base.qcow2", "qcow2")])
def test_create_is_byte_identical_to_qemu_img(tmp_path: Path, size: str, opts: dict,
                                               backing: tuple[str, str] | None) -> None:
    ours, theirs = tmp_path / "ours.qed", tmp_path / "theirs.qed"
    kw: dict = dict(opts)
    args = []
    if opts:
        args += ["-o", ",".join(f"{k}={v}" for k, v in opts.items())]
    if backing:
        kw.update(backing_file=backing[0], backing_fmt=backing[1])
        args += ["-b", backing[0], "-F", backing[1], "-u"]
    r = qemu_img("create", "-q", "-f", "qed", *args, str(theirs), size, check=False)
    if r.returncode:   # 5G with 4 KiB clusters and 2-cluster tables: too large for both
        assert "image size" in r.stderr
        with pytest.raises(BlockError, match="larger than"):
            Qed.create(str(ours), parse_size(size), **kw)
        return
    Qed.create(str(ours), parse_size(size), **kw)
    assert ours.read_bytes() == theirs.read_bytes()
    assert os.path.getsize(ours) == os.path.getsize(theirs)


@pytest.mark.parametrize("opts", [[], ["-o", "cluster_size=4K,table_size=2"]])
def test_writes_lay_out_the_file_as_qemu(tmp_path: Path, opts: list[str]) -> None:
    """The same writes give the same file: data clusters, then a new L2 table, then
    its L1 entry; the need-check flag cleared on close."""
    ours, theirs = tmp_path / "ours.qed", tmp_path / "theirs.qed"
    for img in (ours, theirs):
        qemu_img("create", "-q", "-f", "qed", *opts, str(img), "7M")
    _qemu_writes(theirs)
    _our_writes(ours)
    assert ours.read_bytes() == theirs.read_bytes()


def test_qemu_images_read_byte_for_byte(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(7 * MiB, 5))
    plain, over = tmp_path / "plain.qed", tmp_path / "over.qed"
    qemu_img("create", "-q", "-f", "qed", "-o", "cluster_size=4K", str(plain), "7M")
    qemu_img("create", "-q", "-f", "qed", "-b", "base.raw", "-F", "raw", str(over))
    for img in (plain, over):
        _qemu_writes(img)
        qemu_io(img, "write -z 3M 131072", "write -z 4M 4096")   # zero clusters
        expect = to_raw(img, tmp_path / "x.raw")
        with BlockBackend.open(str(img), "qed") as bb:
            assert bb.read(0, bb.size) == expect
        with Qed.open(str(img)) as drv:
            extents = list(drv.block_status(0, drv.size))
            zero = [e for e in extents if e.is_zero]
            assert zero and all(not any(expect[e.offset:e.end]) for e in zero)
            for e in extents:
                if e.is_data:
                    assert drv.read(e.offset, e.length) == expect[e.offset:e.end]
    with Qed.open(str(over)) as drv:
        assert drv.backing_filename == "base.raw" and drv.backing_format == "raw"


def test_our_images_accepted_by_qemu(tmp_path: Path) -> None:
    img, model_path = tmp_path / "ours.qed", tmp_path / "model.raw"
    Qed.create(str(img), 9 * MiB + 512, cluster_size=8192, table_size=2)
    model = bytearray(9 * MiB + 512)
    with Qed.open(str(img), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)
            model[off:off + n] = bytes([p]) * n
        drv.write_zeroes(512 * 1000, 8192 * 3)
        model[512 * 1000:512 * 1000 + 8192 * 3] = bytes(8192 * 3)
        drv.write(9 * MiB, b"\x77" * 512)
        model[9 * MiB:] = b"\x77" * 512
    model_path.write_bytes(model)
    r = qemu_img("check", "-f", "qed", str(img), check=False)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr
    qemu_img("compare", "-f", "qed", "-F", "raw", str(img), str(model_path))
    out = qemu_io(img, "read -P 0x11 100 5000", "read -P 0x77 9M 512", "read -P 0 0 100")
    assert "read 5000/5000" in out and "read 512/512" in out
    mine, theirs = info_json("vmforge", img, "qed"), info_json("qemu-img", img, "qed")
    for key in ("virtual-size", "cluster-size", "format", "dirty-flag"):
        assert mine[key] == theirs[key], key


def test_backing_chains_both_ways(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "4M")
    qemu_io(base, "write -P 0x5a 0 4M", fmt="qcow2")
    ours, theirs = tmp_path / "ours.qed", tmp_path / "theirs.qed"
    Qed.create(str(ours), 4 * MiB, backing_file="base.qcow2", backing_fmt="qcow2")
    qemu_img("create", "-q", "-f", "qed", "-b", "base.qcow2", "-F", "qcow2", str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()
    with BlockBackend.open(str(ours), "qed", readonly=False) as bb:
        assert bb.layers[1].format == "qcow2"   # not recorded: probed, as QEMU
        bb.write(1000, b"top")                  # copy-on-write of a partial cluster
    qemu_io(theirs, "write -P 0x74 1000 1")
    qemu_io(theirs, "write -P 0x6f 1001 1", "write -P 0x70 1002 1")
    assert qemu_img("compare", str(ours), str(theirs)).returncode == 0
    expect = bytearray(b"\x5a" * 4 * MiB)
    expect[1000:1003] = b"top"
    assert to_raw(ours, tmp_path / "o.raw") == expect
    assert ours.read_bytes() == theirs.read_bytes()
    info = info_json("qemu-img", ours, "qed")
    assert info["backing-filename"] == "base.qcow2" and "backing-filename-format" not in info


def test_need_check_flag_and_crash_recovery(tmp_path: Path) -> None:
    img = tmp_path / "crash.qed"
    Qed.create(str(img), 4 * MiB)
    drv = Qed.open(str(img), readonly=False)
    drv.write(0, b"\x42" * 70000)
    assert drv.needs_check
    assert struct.unpack_from("<Q", img.read_bytes(), 16)[0] & 2   # on disk, before close
    # a crash: the file as it is now, with a leaked cluster appended by a lost write
    crashed = tmp_path / "crashed.qed"
    shutil.copyfile(img, crashed)
    with open(crashed, "ab") as f:
        f.write(b"\x99" * 65536)
    drv.close()
    assert not struct.unpack_from("<Q", img.read_bytes(), 16)[0] & 2
    # (qemu-img info does not show qed's flag as dirty-flag; vmforge img info does)
    assert json.loads(vmforge_img("info", "--output", "json", str(crashed)).stdout)["dirty-flag"]
    r = qemu_img("check", "-f", "qed", str(crashed), check=False)
    assert r.returncode == 3 and "1 leaked clusters" in r.stdout
    with Qed.open(str(crashed)) as ro:   # read-only opens leave it as it is
        assert ro.needs_check and ro.info().dirty and ro.check().leaks == 1
    with Qed.open(str(crashed), readonly=False) as rw:   # read-write: checked first
        assert not rw.needs_check
        assert rw.read(0, 70000) == b"\x42" * 70000
    r = qemu_img("check", "-f", "qed", str(crashed), check=False)
    assert r.returncode == 0, r.stdout


def test_check_repairs_leaks_qemu_sees(tmp_path: Path) -> None:
    img = tmp_path / "leaky.qed"
    qemu_img("create", "-q", "-f", "qed", "-o", "cluster_size=4K", str(img), "8M")
    qemu_io(img, *(f"write -P {i + 1:#x} {i * 3 * 4096} 4096" for i in range(40)))
    expect = bytearray(to_raw(img, tmp_path / "before.raw"))
    # unmap three data clusters by hand: their space leaks
    with Qed.open(str(img)) as drv:
        spots = [drv.l1[0] + 8 * (3 * k) for k in (2, 17, 39)]
    for at, k in zip(spots, (2, 17, 39), strict=True):
        with open(img, "r+b") as f:
            f.seek(at)
            f.write(bytes(8))
        expect[k * 3 * 4096:k * 3 * 4096 + 4096] = bytes(4096)
    r = qemu_img("check", "-f", "qed", str(img), check=False)
    assert r.returncode == 3 and "3 leaked clusters" in r.stdout, r.stdout
    r = vmforge_img("check", "-f", "qed", str(img), check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    size_before = os.path.getsize(img)
    r = vmforge_img("check", "-r", "leaks", "-f", "qed", str(img), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.getsize(img) == size_before - 3 * 4096
    r = qemu_img("check", "-f", "qed", str(img), check=False)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout
    assert to_raw(img, tmp_path / "after.raw") == expect


def test_check_all_clears_bad_entries(tmp_path: Path) -> None:
    img = tmp_path / "bad.qed"
    Qed.create(str(img), 4 * MiB)
    with Qed.open(str(img), readonly=False) as drv:
        drv.write(0, b"\1" * 4096)
        drv.write(MiB, b"\2" * 65536)
        l2 = drv.l1[0]
    with open(img, "r+b") as f:   # cluster 16's entry points past the end of the file
        f.seek(l2 + 8 * 16)
        f.write(struct.pack("<Q", 1 << 40))
    assert qemu_img("check", "-f", "qed", str(img), check=False).returncode == 2
    with Qed.open(str(img)) as drv:
        res = drv.check()
        assert res.corruptions == 1 and any(m.startswith("ERROR L2 entry 16") for m in
                                              res.messages)
    # -r all clears the entry, then reclaims the cluster it pointed at (now a leak)
    r = vmforge_img("check", "-r", "all", "-f", "qed", str(img), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 leaked clusters\n    1 corruptions" in r.stdout
    assert qemu_img("check", "-f", "qed", str(img), check=False).returncode == 0
    with Qed.open(str(img)) as drv:
        assert drv.read(0, 4096) == b"\1" * 4096 and drv.read(MiB, 65536) == bytes(65536)


def test_shrink_and_grow_stay_clean(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x33" * 4 * MiB)
    img = tmp_path / "t.qed"
    Qed.create(str(img), 4 * MiB, backing_file="base.raw", backing_fmt="raw")
    with BlockBackend.open(str(img), "qed", readonly=False) as bb:
        bb.write(0, b"\x01" * 100)
        bb.write(3 * MiB, b"\x02" * 100)
        bb.truncate(2 * MiB)
        bb.truncate(6 * MiB)
    expect = b"\x01" * 100 + b"\x33" * (2 * MiB - 100) + bytes(4 * MiB)
    assert qemu_img("check", "-f", "qed", str(img), check=False).returncode == 0
    assert to_raw(img, tmp_path / "t.raw") == expect


def test_convert_both_ways(tmp_path: Path) -> None:
    qemu_tools.assert_raw_converts_both_ways("qed", "qed", tmp_path)
