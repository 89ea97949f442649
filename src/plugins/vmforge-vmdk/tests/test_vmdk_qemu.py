"""vmdk images against qemu-img and qemu-io: the same files from create and from the
same writes, images of either read by the other, check, compare, info, convert,
backing files."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from functools import partial
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError
from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import (
    assert_converts_back,
    assert_qemu_accepts,
    assert_raw_converts_both_ways,
    info_json,
    needs_qemu,
    pattern,
    qcow2_source,
    qemu_img,
    vmforge_img,
    write_odd_patterns,
)
from vmforge_vmdk import Vmdk

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="vmdk")
to_raw = partial(qemu_tools.to_raw, fmt="vmdk")
MiB = 1 << 20
SUBFORMATS = ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
              "twoGbMaxExtentFlat", "streamOptimized")
SPARSE_KINDS = ("monolithicSparse", "twoGbMaxExtentSparse")

#: writes both tools do alike: partial grains, runs of grains, an unaligned tail
WRITES = ((100, 5000, 0x11), (512 * 1000, 70144, 0x22), (2 * MiB - 1024, 4096, 0x33),
          (5 * MiB + 512, 512, 0x44), (512 * 1000 + 4096, 512, 0x55),
          (2 * MiB - 3000, 300_000, 0x66))


def cid_of(path: Path) -> int:
    m = re.search(rb"\nCID=([0-9a-f]+)\n", path.read_bytes()[:MiB])
    assert m, f"no CID in {path}"
    return int(m.group(1), 16)


def use_cid(monkeypatch: pytest.MonkeyPatch, cid: int) -> None:
    """Our next CID is ``cid`` (qemu-img's are random: the files compare equal then; the
    driver imports random when it makes one)."""
    monkeypatch.setattr(random, "getrandbits", lambda n: cid)


def files_of(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(directory.iterdir())}


def assert_same_files(ours: Path, theirs: Path) -> None:
    """The same file names, sizes and bytes (flat extents: sizes and no data)."""
    a, b = files_of(ours), files_of(theirs)
    assert sorted(a) == sorted(b)
    for name in a:
        sa, sb = a[name].stat().st_size, b[name].stat().st_size
        assert sa == sb, name
        if sa > 64 * MiB:   # a flat extent: created as a hole by both
            with open(a[name], "rb") as fa:
                with pytest.raises(OSError):
                    os.lseek(fa.fileno(), 0, os.SEEK_DATA)
            continue
        assert a[name].read_bytes() == b[name].read_bytes(), name


@pytest.mark.parametrize("subformat", SUBFORMATS)
@pytest.mark.parametrize("size", ["512", "3000001", "7M", "3G"])
def test_create_is_byte_identical_to_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               subformat: str, size: str) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "v").mkdir()
    theirs, ours = tmp_path / "q" / "d.vmdk", tmp_path / "v" / "d.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(theirs), size)
    use_cid(monkeypatch, cid_of(theirs))
    Vmdk.create(str(ours), info_json("qemu-img", theirs, "vmdk")["virtual-size"],
                subformat=subformat)
    assert_same_files(ours.parent, theirs.parent)


@pytest.mark.parametrize("opts", ["adapter_type=lsilogic,hwversion=7,zeroed_grain=on",
                                  "adapter_type=buslogic,compat6=on",
                                  "adapter_type=legacyESX,toolsversion=1234",
                                  "subformat=twoGbMaxExtentFlat,adapter_type=lsilogic"])
def test_create_options_as_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    opts: str) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "v").mkdir()
    theirs, ours = tmp_path / "q" / "o.vmdk", tmp_path / "v" / "o.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", opts, str(theirs), "100M")
    use_cid(monkeypatch, cid_of(theirs))
    Vmdk.create(str(ours), 100 * MiB, **dict(kv.split("=") for kv in opts.split(",")))
    assert_same_files(ours.parent, theirs.parent)


def test_create_refusals_as_qemu_img(tmp_path: Path) -> None:
    """Options qemu-img's vmdk driver refuses: the same words after the file's name."""
    for opts in ("subformat=monolithicFlat,zeroed_grain=on", "compat6=on,hwversion=7",
                 "subformat=streamOptimizedX", "adapter_type=scsi"):
        theirs = qemu_img("create", "-f", "vmdk", "-o", opts, str(tmp_path / "q.vmdk"), "1M",
                          check=False)
        r = vmforge_img("create", "-f", "vmdk", "-o", opts, str(tmp_path / "v.vmdk"), "1M",
                        check=False)
        words = theirs.stderr.split("q.vmdk: ", 1)[1]
        assert theirs.returncode and r.returncode, r.stderr
        assert r.stderr == f"vmforge img: {tmp_path / 'v.vmdk'}: {words}", r.stderr


@pytest.mark.parametrize("subformat", ["monolithicSparse", "twoGbMaxExtentSparse"])
@pytest.mark.parametrize("zeroed", [False, True])
def test_writes_lay_out_the_file_as_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          subformat: str, zeroed: bool) -> None:
    """The same writes (and whole-grain zero writes) give the same files: grains
    appended in the order written, the grain table and its redundant copy updated."""
    (tmp_path / "q").mkdir()
    theirs = tmp_path / "q" / "w.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o",
             f"subformat={subformat},zeroed_grain={'on' if zeroed else 'off'}",
             str(theirs), "2049M")
    shutil.copytree(tmp_path / "q", tmp_path / "v")
    ours = tmp_path / "v" / "w.vmdk"
    zero = ("write -z 1M 128k", "write -z 2048M 64k") if zeroed else ()
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES),
            "write -P 0x77 2047M 2M", *zero)
    use_cid(monkeypatch, cid_of(theirs))
    with Vmdk.open(str(ours), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)
        drv.write(2047 * MiB, b"\x77" * 2 * MiB)   # across the two extents when split
        if zeroed:
            drv.write_zeroes(MiB, 131072)
            drv.write_zeroes(2048 * MiB, 65536)
    assert_same_files(ours.parent, theirs.parent)


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_qemu_images_read_byte_for_byte(tmp_path: Path, subformat: str) -> None:
    img = tmp_path / "q.vmdk"
    zeroed = subformat in SPARSE_KINDS
    opts = f"subformat={subformat}" + (",zeroed_grain=on" if zeroed else "")
    if subformat == "streamOptimized":   # qemu writes such images through convert only
        src = tmp_path / "src.raw"
        src.write_bytes(pattern(3 * MiB, 1) + bytes(2 * MiB) + b"\x42" * 70001
                        + bytes(MiB - 70001))
        qemu_img("convert", "-O", "vmdk", "-o", opts, str(src), str(img))
    else:
        qemu_img("create", "-q", "-f", "vmdk", "-o", opts, str(img), "7M")
        qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
        if zeroed:
            qemu_io(img, "write -z 512k 128k", "write -z 6M 64k")
    expect = to_raw(img, tmp_path / "x.raw")
    with BlockBackend.open(str(img), "vmdk") as bb:
        assert bb.read(0, bb.size) == expect
    with Vmdk.open(str(img)) as drv:
        assert drv.create_type == subformat
        extents = list(drv.block_status(0, drv.size))
        for e in extents:
            if e.is_zero or not e.is_allocated:
                assert not any(expect[e.offset:e.end]), e
        if zeroed:
            assert any(e.is_zero and e.is_allocated for e in extents)
        assert drv.check().clean


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_our_images_accepted_by_qemu(tmp_path: Path, subformat: str) -> None:
    img = tmp_path / "ours.vmdk"
    Vmdk.create(str(img), 9 * MiB + 512, subformat=subformat)
    with Vmdk.open(str(img), readonly=False) as drv:
        model = write_odd_patterns(drv)
        drv.write(3 * MiB, b"\x5a" * 512)
        model[3 * MiB:3 * MiB + 512] = b"\x5a" * 512
    r = qemu_img("check", "-f", "vmdk", str(img), check=False)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr
    if subformat == "streamOptimized":   # qemu does not rewrite a compressed grain
        model_path = tmp_path / "model.raw"
        model_path.write_bytes(model)
        qemu_img("compare", "-f", "vmdk", "-F", "raw", str(img), str(model_path))
        assert "Pattern verification failed" not in qemu_io(img, f"read -P 0x5a {3 * MiB} 512")
    else:
        assert_qemu_accepts(img, "vmdk", model, 3 * MiB, tmp_path)
    with Vmdk.open(str(img)) as drv:
        assert drv.read(0, drv.size) == model
        assert drv.check().clean


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_info_as_qemu_img(tmp_path: Path, subformat: str) -> None:
    img = tmp_path / "i.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(img), "3G")
    if subformat != "streamOptimized":   # (qemu writes those through convert only)
        qemu_io(img, "write -P 1 0 64k")
    mine, theirs = info_json("vmforge", img, "vmdk"), info_json("qemu-img", img, "vmdk")
    for key in ("virtual-size", "cluster-size", "format", "actual-size", "dirty-flag",
                "format-specific", "filename"):
        assert mine.get(key) == theirs.get(key), key
    # and probed: the magic, or the descriptor file
    probed = json.loads(vmforge_img("info", "--output", "json", str(img)).stdout)
    assert probed["format"] == "vmdk"


def test_convert_both_ways(tmp_path: Path) -> None:
    assert_raw_converts_both_ways("vmdk", "vmdk", tmp_path)


@pytest.mark.parametrize("subformat", ["streamOptimized", "twoGbMaxExtentSparse",
                                       "monolithicFlat"])
@pytest.mark.parametrize("compress", [False, True])
def test_convert_qcow2_to_vmdk_and_back(tmp_path: Path, subformat: str,
                                        compress: bool) -> None:
    src = qcow2_source(tmp_path)
    img = tmp_path / "c.vmdk"
    vmforge_img("convert", *(["-c"] if compress else []), "-O", "vmdk", "-o",
                f"subformat={subformat}", str(src), str(img))
    assert qemu_img("check", "-f", "vmdk", str(img), check=False).returncode == 0
    assert qemu_img("compare", "-f", "qcow2", "-F", "vmdk", str(src),
                    str(img)).returncode == 0
    assert_converts_back(img, "vmdk", src, tmp_path)
    if subformat == "streamOptimized":   # compressed grains, both ways
        theirs = tmp_path / "theirs.vmdk"
        qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src),
                 str(theirs))
        with Vmdk.open(str(img)) as a, Vmdk.open(str(theirs)) as b:
            assert a.read(0, a.size) == b.read(0, b.size)
            assert any(e.status & e.status.COMPRESSED for e in a.block_status(0, a.size))


def test_backing_chains_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(base), "4M")
    qemu_io(base, "write -P 0x5a 0 4M")
    (tmp_path / "q").mkdir()
    (tmp_path / "v").mkdir()
    theirs, ours = tmp_path / "q" / "over.vmdk", tmp_path / "v" / "over.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", "../base.vmdk", "-F", "vmdk", str(theirs))
    use_cid(monkeypatch, cid_of(theirs))
    Vmdk.create(str(ours), 4 * MiB, backing_file="../base.vmdk", backing_fmt="vmdk")
    assert ours.read_bytes() == theirs.read_bytes()   # parentCID is the base's CID
    with pytest.raises(BlockError, match="vmdk"):
        Vmdk.create(str(tmp_path / "x.vmdk"), MiB, backing_file="base.vmdk",
                    backing_fmt="qcow2")
    with BlockBackend.open(str(ours), "vmdk", readonly=False) as bb:
        assert bb.layers[1].format == "vmdk"
        bb.write(1000, b"top")   # copy-on-write of a partial grain
    qemu_io(theirs, "write -P 0x74 1000 1", "write -P 0x6f 1001 1", "write -P 0x70 1002 1")
    assert qemu_img("compare", str(ours), str(theirs)).returncode == 0
    expect = bytearray(b"\x5a" * 4 * MiB)
    expect[1000:1003] = b"top"
    assert to_raw(ours, tmp_path / "o.raw") == expect
    info = info_json("vmforge", ours, "vmdk")
    assert info["backing-filename"] == "../base.vmdk"
    assert info["backing-filename-format"] == "vmdk"


def test_stream_grains_laid_out_as_qemu_img_convert(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Compressed grains written in order append the file qemu-img convert writes:
    each behind its marker, a sector apart, the tables updated in place."""
    data = bytearray(6 * MiB + 1536)
    data[:100_000] = pattern(100_000, 1)
    data[3 * MiB:4 * MiB] = b"\x62" * MiB
    data[-1000:] = b"\x63" * 1000
    src = tmp_path / "src.raw"
    src.write_bytes(data)
    (tmp_path / "q").mkdir()
    (tmp_path / "v").mkdir()
    theirs, ours = tmp_path / "q" / "s.vmdk", tmp_path / "v" / "s.vmdk"
    qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(theirs))
    use_cid(monkeypatch, cid_of(theirs))
    Vmdk.create(str(ours), len(data), subformat="streamOptimized")
    with Vmdk.open(str(ours), readonly=False) as drv:
        for at in range(0, len(data), 65536):
            piece = bytes(data[at:at + 65536])
            if any(piece):
                drv.write_compressed(at, piece)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("subformat", ["monolithicFlat", "twoGbMaxExtentFlat"])
def test_flat_writes_as_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             subformat: str) -> None:
    """Flat extents take the data where it belongs; the descriptor file gets the new
    CID padded to a sector, as QEMU writes it."""
    (tmp_path / "q").mkdir()
    theirs = tmp_path / "q" / "f.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(theirs), "7M")
    shutil.copytree(tmp_path / "q", tmp_path / "v")
    ours = tmp_path / "v" / "f.vmdk"
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in WRITES))
    use_cid(monkeypatch, cid_of(theirs))
    with Vmdk.open(str(ours), readonly=False) as drv:
        for off, n, p in WRITES:
            drv.write(off, bytes([p]) * n)
    assert ours.stat().st_size == theirs.stat().st_size == 512
    assert_same_files(ours.parent, theirs.parent)


def test_missing_grain_tables_are_allocated(tmp_path: Path) -> None:
    """A directory entry of 0 (no grain table yet, as some tools leave them): the first
    write there appends a table and its redundant copy; qemu reads the result."""
    img = tmp_path / "g.vmdk"
    Vmdk.create(str(img), 70 * MiB)
    raw = img.read_bytes()
    gd, rgd = (int.from_bytes(raw[at:at + 8], "little") * 512 for at in (56, 48))
    for at in (gd, rgd):   # grain tables 0 and 1 gone
        with open(img, "r+b") as f:
            f.seek(at)
            f.write(bytes(8))
    size_before = img.stat().st_size
    with Vmdk.open(str(img), readonly=False) as drv:
        drv.write(100, b"\x11" * 5000)
        drv.write(32 * MiB + 5, b"\x22" * 70000)
        assert drv.check().clean
    assert img.stat().st_size > size_before
    r = qemu_img("check", "-f", "vmdk", str(img), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    out = qemu_io(img, "read -P 0x11 100 5000", f"read -P 0x22 {32 * MiB + 5} 70000",
                  "read -P 0 5100 1000")
    assert out.count("read ") == 3 and "Pattern verification failed" not in out
