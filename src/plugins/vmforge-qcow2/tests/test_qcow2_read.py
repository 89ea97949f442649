"""Images made by qemu-img / qemu-io read back byte-exact through vmforge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qcow2_oracle import needs_qemu, pattern, qemu_img, qemu_io, to_raw

from vmforge.block import BlockStatus
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


def _read_all(path: Path, **kw: object) -> bytes:
    with Qcow2.open(str(path), **kw) as img:
        # odd-sized vectored reads crossing clusters
        out = bytearray(img.size)
        mv = memoryview(out)
        pos = 0
        step = 3 * 65536 + 4097
        while pos < img.size:
            n = min(step, img.size - pos)
            cut = n // 3
            img.preadv(pos, [mv[pos:pos + cut], mv[pos + cut:pos + n]])
            pos += n
        return bytes(out)


def _scatter_writes(path: Path) -> None:
    qemu_io(path, "write -P 0xab 0 4k", "write -P 0x11 65000 70000",
            "write -P 0x5c 1M 1M", "write -P 0x77 3000k 5", "write -P 0xfe 4193792 512")


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
@pytest.mark.parametrize("cluster_size", [512, 4096, 65536, 2 * MiB])
def test_qemu_written_image_reads_exact(tmp_path: Path, compat: str, cluster_size: int) -> None:
    img = tmp_path / "q.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"compat={compat},cluster_size={cluster_size}",
             str(img), "4M")
    _scatter_writes(img)
    expect = to_raw(img, tmp_path / "ref.raw")
    assert any(expect)
    assert _read_all(img) == expect
    with Qcow2.open(str(img)) as q:
        assert q.version == (2 if compat == "0.10" else 3)
        assert q.cluster_size == cluster_size
        assert q.check().clean


def test_refcount_bits_variants_read(tmp_path: Path) -> None:
    for bits in (1, 8, 64):
        img = tmp_path / f"r{bits}.qcow2"
        qemu_img("create", "-f", "qcow2", "-o", f"refcount_bits={bits}", str(img), "4M")
        _scatter_writes(img)
        assert _read_all(img) == to_raw(img, tmp_path / f"r{bits}.raw")
        with Qcow2.open(str(img)) as q:
            r = q.check()
            assert r.clean, r.messages


def test_compressed_image_reads_exact(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    data = bytearray(6 * MiB)
    for i in range(0, len(data), 65536):   # compressible but not trivial
        data[i:i + 4096] = pattern(4096, i)
        data[i + 8192:i + 9000] = b"t" * 808
    data[-3:] = b"end"
    src.write_bytes(bytes(data))
    img = tmp_path / "c.qcow2"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(src), str(img))
    with Qcow2.open(str(img)) as q:
        ext = list(q.block_status(0, q.size))
        assert any(e.status & BlockStatus.COMPRESSED for e in ext)
        assert q.check().clean
    assert _read_all(img) == bytes(data)


def test_zero_clusters_and_block_status_match_qemu_map(tmp_path: Path) -> None:
    img = tmp_path / "z.qcow2"
    qemu_img("create", "-f", "qcow2", str(img), "4M")
    qemu_io(img, "write -P 0x42 0 2M", "write -z 64k 192k", "write -z -u 1M 128k",
            "write -z 3M 64k")
    expect = to_raw(img, tmp_path / "z.raw")
    assert _read_all(img) == expect
    qmap = json.loads(qemu_img("map", "--output", "json", str(img)).stdout)
    with Qcow2.open(str(img)) as q:
        ours = list(q.block_status(0, q.size))
    # compare per 64k cluster: data / zero as qemu-img map says
    def at(extents: list, off: int, key: str) -> bool:
        for e in extents:
            if isinstance(e, dict):
                if e["start"] <= off < e["start"] + e["length"]:
                    return bool(e[key])
            elif e.offset <= off < e.end:
                return e.is_data if key == "data" else e.is_zero
        raise AssertionError(off)
    for off in range(0, 4 * MiB, 65536):
        assert at(qmap, off, "data") == at(ours, off, "data"), off
        assert at(qmap, off, "zero") == at(ours, off, "zero"), off
    # host offsets agree for data
    for e in qmap:
        if e["data"] and "offset" in e:
            with Qcow2.open(str(img)) as q:
                first = next(iter(q.block_status(e["start"], 512)))
                assert first.host_offset == e["offset"]


def test_backing_file_recorded_and_unallocated_reads_zero(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "2M")
    qemu_io(base, "write -P 0x33 0 2M")
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    qemu_io(top, "write -P 0x44 64k 64k")
    with Qcow2.open(str(top)) as q:
        assert q.backing_filename == "base.qcow2"
        assert q.backing_format == "qcow2"
        assert q.info().backing_filename == "base.qcow2"
        data = q.read(0, q.size)
        assert data[:65536] == bytes(65536)          # unallocated: zeros here
        assert data[65536:131072] == b"\x44" * 65536
        ext = list(q.block_status(0, q.size))
        assert not ext[0].is_allocated and ext[0].offset == 0
        assert ext[1].is_allocated and ext[1].offset == 65536


def test_v2_backing_without_format(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x01" * MiB)
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw",
             str(top))
    with Qcow2.open(str(top)) as q:
        assert q.version == 2
        assert q.backing_filename == "base.raw"
        assert q.backing_format == "raw"
        assert q.size == MiB


def test_snapshots_listed_and_readable(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    qemu_img("create", "-f", "qcow2", str(img), "2M")
    qemu_io(img, "write -P 0x01 0 1M")
    qemu_img("snapshot", "-c", "first", str(img))
    qemu_io(img, "write -P 0x02 512k 1M")
    qemu_img("snapshot", "-c", "second", str(img))
    qemu_io(img, "write -P 0x03 0 64k", "write -z 1M 64k")
    first = to_raw(img, tmp_path / "1.raw", snapshot="first")
    second = to_raw(img, tmp_path / "2.raw", snapshot="second")
    current = to_raw(img, tmp_path / "c.raw")
    listing = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)["snapshots"]
    with Qcow2.open(str(img)) as q:
        snaps = q.snapshots()
        assert [s.name for s in snaps] == ["first", "second"]
        for ours, theirs in zip(snaps, listing, strict=True):
            assert ours.id == theirs["id"]
            assert ours.vm_state_size == theirs["vm-state-size"]
            assert ours.date_sec == theirs["date-sec"]
            assert ours.date_nsec == theirs["date-nsec"]
            assert ours.vm_clock_nsec == theirs["vm-clock-sec"] * 10**9 + theirs["vm-clock-nsec"]
            assert ours.icount == theirs.get("icount")
        assert q.read(0, q.size) == current
        assert q.check().clean
    assert _read_all(img, snapshot="first") == first
    assert _read_all(img, snapshot="2") == second     # by id
    with pytest.raises(Exception, match="no snapshot"):
        Qcow2.open(str(img), snapshot="nope")


def test_lazy_refcounts_image_reads(tmp_path: Path) -> None:
    img = tmp_path / "l.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "lazy_refcounts=on", str(img), "1M")
    qemu_io(img, "write -P 0x66 100k 300k")
    assert _read_all(img) == to_raw(img, tmp_path / "l.raw")
    with Qcow2.open(str(img)) as q:
        assert q.info().format_specific["lazy-refcounts"] is True


def test_info_fields(tmp_path: Path) -> None:
    img = tmp_path / "i.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4k", str(img), "3M")
    theirs = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    with Qcow2.open(str(img)) as q:
        ours = q.info().to_json()
    assert ours["virtual-size"] == theirs["virtual-size"]
    assert ours["cluster-size"] == theirs["cluster-size"]
    spec, qspec = ours["format-specific"]["data"], theirs["format-specific"]["data"]
    for key in ("compat", "lazy-refcounts", "refcount-bits", "corrupt", "extended-l2",
                "compression-type"):
        assert spec[key] == qspec[key], key


@pytest.mark.parametrize("cluster_size", [16384, 65536])
def test_extended_l2_subclusters_read_exact(tmp_path: Path, cluster_size: int) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x99" * (2 * MiB))
    img = tmp_path / "x.qcow2"
    qemu_img("create", "-f", "qcow2", "-o",
             f"extended_l2=on,cluster_size={cluster_size}", "-b", "base.raw", "-F", "raw",
             str(img), "2M")
    sc = cluster_size // 32
    qemu_io(img, f"write -P 0x11 0 {sc}", f"write -P 0x22 {3 * sc} {2 * sc}",
            f"write -z {6 * sc} {sc}", f"write -P 0x33 {cluster_size + 100} 5000",
            "write -P 0x44 1M 200k", f"write -z {cluster_size * 5} {cluster_size}")
    with Qcow2.open(str(img)) as q:
        ours = q.read(0, q.size)
        # unallocated subclusters read as zeros here (the backend fills them)
        assert ours[sc:2 * sc] == bytes(sc)
        assert ours[:sc] == b"\x11" * sc
        ext = list(q.block_status(0, q.size))
        assert q.check().clean
    # with the backing file filled in, the chain matches qemu exactly
    chain = bytearray(ours)
    qmap = json.loads(qemu_img("map", "--output", "json", str(img)).stdout)
    for e in ext:
        if not e.is_allocated:
            chain[e.offset:e.end] = base.read_bytes()[e.offset:e.end]
    assert bytes(chain) == to_raw(img, tmp_path / "x.raw")
    for e in qmap:     # qemu's depth-0 extents are the ones we call allocated
        mine = next(x for x in ext if x.offset <= e["start"] < x.end)
        assert mine.is_allocated == (e["depth"] == 0), (e, mine)
    theirs = json.loads(qemu_img("check", "--output", "json", str(img)).stdout)
    with Qcow2.open(str(img)) as q:
        assert q.check().image_end_offset == theirs["image-end-offset"]


def test_extended_l2_compressed(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes((b"abc" * 400000)[:MiB])
    img = tmp_path / "xc.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", "-o", "extended_l2=on", str(src), str(img))
    assert _read_all(img) == src.read_bytes()
