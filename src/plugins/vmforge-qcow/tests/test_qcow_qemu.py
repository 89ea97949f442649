"""qcow images against qemu-img and qemu-io: layout, both directions, compressed
clusters, backing files, info, convert."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockStatus, parse_size
from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import info_json, needs_qemu, pattern, qemu_img, vmforge_img
from vmforge_qcow import Qcow

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="qcow")
to_raw = partial(qemu_tools.to_raw, fmt="qcow")
MiB = 1 << 20

#: (offset, length, pattern): sector-aligned writes both tools do alike
WRITES = ((0, 4096, 0x11), (512 * 1000, 70144, 0x22), (2 * MiB - 1024, 4096, 0x33),
          (5 * MiB + 512, 512, 0x44), (512 * 1000 + 4096, 512, 0x55))


@pytest.mark.parametrize("size", ["512", "3000001", "7M", "5G"])
@pytest.mark.parametrize("backing", [None, "base.raw", "a/much/longer/name-of-a-base.qcow2"])
def test_create_is_byte_identical_to_qemu_img(tmp_path: Path, size: str,
                                               backing: str | None) -> None:
    ours, theirs = tmp_path / "ours.qcow", tmp_path / "theirs.qcow"
    opts = {"backing_file": backing, "backing_fmt": "raw"} if backing else {}
    Qcow.create(str(ours), parse_size(size), **opts)
    args = ["-b", backing, "-F", "raw", "-u"] if backing else []
    qemu_img("create", "-q", "-f", "qcow", *args, str(theirs), size)
    assert ours.read_bytes() == theirs.read_bytes()


def test_writes_lay_out_the_file_as_qemu(tmp_path: Path) -> None:
    """The same writes give the same file: L2 tables and clusters appended in order."""
    ours, theirs = tmp_path / "ours.qcow", tmp_path / "theirs.qcow"
    for img in (ours, theirs):
        qemu_img("create", "-q", "-f", "qcow", str(img), "7M")
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
    with Qcow.open(str(ours), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)
    assert ours.read_bytes() == theirs.read_bytes()


def test_qemu_images_read_byte_for_byte(tmp_path: Path) -> None:
    src = tmp_path / "src.qcow"
    qemu_img("create", "-q", "-f", "qcow", str(src), "7M")
    qemu_io(src, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
    comp = tmp_path / "comp.qcow"  # qemu-io's compressed clusters (qemu-img 7.2's
    qemu_img("create", "-q", "-f", "qcow", str(comp), "7M")  # convert -c -O qcow fails)
    qemu_io(comp, "write -c -P 0x41 0 4096", "write -c -P 0x42 4096 4096",
            "write -c -P 0x43 3M 4096", "write -P 0x66 4608 1024")  # and a partial write
    for img in (src, comp):
        expect = to_raw(img, tmp_path / "x.raw")
        with Qcow.open(str(img)) as drv:
            assert drv.size == len(expect) == 7 * MiB
            assert drv.read(0, drv.size) == expect
            extents = list(drv.block_status(0, drv.size))
            for e in extents:
                if not e.is_allocated:
                    assert not any(expect[e.offset:e.end])
            if img == comp:
                assert any(e.status & BlockStatus.COMPRESSED for e in extents)


def test_our_images_accepted_by_qemu(tmp_path: Path) -> None:
    img = tmp_path / "ours.qcow"
    Qcow.create(str(img), 9 * MiB + 512)
    with Qcow.open(str(img), readonly=False) as drv:
        model = qemu_tools.write_odd_patterns(drv)
        text = (b"compressible " * 400)[:4096]
        for off in (3 * MiB, 3 * MiB + 4096, 8 * MiB):
            drv.write_compressed(off, text)
            model[off:off + 4096] = text
        drv.write(3 * MiB + 100, b"\x5a" * 512)   # into a compressed cluster
        model[3 * MiB + 100:3 * MiB + 612] = b"\x5a" * 512
        assert drv._entry((8 * MiB) // 4096) >> 63   # still compressed
    qemu_tools.assert_qemu_accepts(img, "qcow", model, 3 * MiB + 100, tmp_path)
    with Qcow.open(str(img)) as drv:
        assert drv.read(0, drv.size) == model
    assert to_raw(img, tmp_path / "back.raw") == model


def test_backing_files_both_ways(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(4 * MiB, 9))
    theirs = tmp_path / "theirs.qcow"
    qemu_img("create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", str(theirs))
    qemu_io(theirs, "write -P 0x33 1000 3000", "write -P 0x44 2M 512")
    expect = to_raw(theirs, tmp_path / "t.raw")
    with BlockBackend.open(str(theirs)) as bb:
        assert [la.driver.format_name for la in bb.layers] == ["qcow", "raw"]
        assert bb.read(0, bb.size) == expect
    ours = tmp_path / "ours.qcow"
    vmforge_img("create", "-f", "qcow", "-b", "base.raw", "-F", "raw", str(ours))
    with BlockBackend.open(str(ours), "qcow", readonly=False) as bb:
        bb.write(1000, b"\x33" * 3000)
        bb.write(2 * MiB, b"\x44" * 512)
    assert qemu_img("compare", str(ours), str(theirs)).returncode == 0
    info = info_json("qemu-img", ours, "qcow")
    assert info["backing-filename"] == "base.raw" and info["cluster-size"] == 512
    # rebase onto a copy: only the name changes, the data reads the same
    (tmp_path / "copy.raw").write_bytes(base.read_bytes())
    vmforge_img("rebase", "-u", "-f", "qcow", "-b", "copy.raw", "-F", "raw", str(ours))
    assert info_json("qemu-img", ours, "qcow")["backing-filename"] == "copy.raw"
    assert qemu_img("compare", str(ours), str(theirs)).returncode == 0


@pytest.mark.parametrize("backing", [False, True])
def test_img_info_fields_as_qemu_img(tmp_path: Path, backing: bool) -> None:
    (tmp_path / "b.raw").write_bytes(bytes(MiB))
    img = tmp_path / "i.qcow"
    args = ["-b", "b.raw", "-F", "raw"] if backing else []
    qemu_img("create", "-q", "-f", "qcow", *args, str(img), "5000000")
    qemu_io(img, "write -P 1 0 65536")
    ours, theirs = info_json("vmforge", img, "qcow"), info_json("qemu-img", img, "qcow")
    for key in ("format", "virtual-size", "cluster-size", "dirty-flag", "backing-filename",
                "full-backing-filename", "backing-filename-format", "actual-size"):
        assert ours.get(key) == theirs.get(key), key
    probed = json.loads(vmforge_img("info", "--output", "json", str(img)).stdout)
    assert probed["format"] == "qcow"


@pytest.mark.parametrize("compress", [False, True])
def test_convert_to_and_from_qcow2_and_raw(tmp_path: Path, compress: bool) -> None:
    src = qemu_tools.qcow2_source(tmp_path)
    out = tmp_path / "out.qcow"
    vmforge_img("convert", *(["-c"] if compress else []), "-f", "qcow2", "-O", "qcow",
                str(src), str(out))
    assert qemu_img("compare", "-f", "qcow2", "-F", "qcow", str(src), str(out)).returncode == 0
    if compress:  # qemu-img sees compressed clusters
        mapped = json.loads(qemu_img("map", "--output", "json", "-f", "qcow", str(out)).stdout)
        assert any(m["data"] and "offset" not in m for m in mapped), mapped
    qemu_tools.assert_converts_back(out, "qcow", src, tmp_path)
