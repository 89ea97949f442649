"""Bad input gives clear BlockError / CorruptImageError, never a crash or a hang."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import pytest

from vmforge.block import BlockError, CorruptImageError
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.header import OFF_AUTOCLEAR, OFF_INCOMPAT
from vmforge_qcow2.l2 import OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED

MiB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "ok.qcow2"
    Qcow2.create(str(img), 4 * MiB, cluster_size=4096)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"\x5a" * 20000)
    return img


def patch(path: Path, offset: int, data: bytes) -> Path:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def fails(path: Path, match: str, exc: type[Exception] = BlockError,
          readonly: bool = True) -> BlockError:
    with pytest.raises(exc, match=match) as info:
        q = Qcow2.open(str(path), readonly=readonly)
        try:
            q.read(0, min(q.size, MiB))
        finally:
            q.close()
    assert str(path) in str(info.value)
    return info.value  # type: ignore[return-value]


@pytest.mark.parametrize("cut", [0, 4, 71, 100, 4095])
def test_truncated_header(image: Path, cut: int) -> None:
    os.truncate(image, cut)
    fails(image, "too short|bad magic|outside|past the end|short")


def test_bad_magic_and_version(image: Path) -> None:
    patch(image, 4, u32(4))
    fails(image, "version 4")
    patch(image, 0, b"QFI\x00")
    fails(image, "bad magic")


@pytest.mark.parametrize("bits", [0, 8, 22, 63, 0xFFFFFFFF])
def test_cluster_bits_out_of_range(image: Path, bits: int) -> None:
    patch(image, 20, u32(bits))
    err = fails(image, "cluster_bits", CorruptImageError)
    assert err.offset == 20 and err.table == "header"


def test_size_near_2_63(image: Path) -> None:
    patch(image, 24, u64(1 << 63))
    fails(image, "2\\^63", CorruptImageError)
    patch(image, 24, u64((1 << 63) - 512))
    fails(image, "L1 table has \\d+ entries, the virtual size", CorruptImageError)


def test_huge_l1_size(image: Path) -> None:
    patch(image, 36, u32(0xFFFFFFFF))
    fails(image, "L1 table has 4294967295 entries", CorruptImageError)
    patch(image, 36, u32(4 << 20))       # allowed count, but the file is not that big
    fails(image, "L1 table .* past the end", CorruptImageError)


def test_tables_outside_file_or_misaligned(image: Path, tmp_path: Path) -> None:
    good = image.read_bytes()
    for off, val, match in ((40, u64(1 << 50), "L1 table"), (40, u64(4097), "L1 table"),
                            (48, u64(1 << 45), "refcount table"),
                            (56, u32(0), "refcount table"), (56, u32(1 << 30), "refcount table"),
                            (48, u64(0), "refcount table")):
        image.write_bytes(good)
        patch(image, off, val)
        fails(image, match, CorruptImageError)


def test_tables_pointing_at_each_other(image: Path) -> None:
    with open(image, "rb") as f:
        head = f.read(72)
    reftable = struct.unpack_from(">Q", head, 48)[0]
    patch(image, 40, u64(reftable))     # L1 on top of the refcount table
    fails(image, "overlaps", CorruptImageError)
    patch(image, 40, u64(0))
    fails(image, "L1 table offset", CorruptImageError)


def test_unknown_incompatible_bits_named(image: Path) -> None:
    patch(image, OFF_INCOMPAT, u64(1 << 5 | 1 << 40))
    fails(image, "bit 5, bit 40")
    patch(image, OFF_INCOMPAT, u64(1 << 4))            # 4 KiB clusters: too small
    fails(image, "extended L2 entries need clusters of at least 16 KiB", CorruptImageError)
    patch(image, OFF_INCOMPAT, u64(1 << 2))
    fails(image, "external data file")


def test_encryption_and_compression_type_refused(image: Path) -> None:
    good = image.read_bytes()
    patch(image, 32, u32(2))
    fails(image, "encrypted")
    image.write_bytes(good)
    patch(image, OFF_INCOMPAT, u64(1 << 3))
    patch(image, 104, b"\x02")
    fails(image, "compression type 2 is not supported")
    patch(image, 104, b"\x00")
    fails(image, "does not agree", CorruptImageError)


def test_autoclear_bits_cleared_on_write_open(image: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    patch(image, OFF_AUTOCLEAR, u64(1 << 0 | 1 << 7))
    with Qcow2.open(str(image)) as q:
        assert q.h.autoclear_features == 0x81        # read-only: untouched
    Qcow2.open(str(image), readonly=False).close()   # unknown bits: cleared at once
    with open(image, "rb") as f:
        f.seek(OFF_AUTOCLEAR)
        assert f.read(8) == u64(1)
    with Qcow2.open(str(image), readonly=False) as q:  # bitmaps: before the first write
        q.write(0, b"\x01" * 512)
    assert "bitmaps" in caplog.text
    with open(image, "rb") as f:
        f.seek(OFF_AUTOCLEAR)
        assert f.read(8) == bytes(8)


def test_corrupt_bit(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    patch(image, OFF_INCOMPAT, u64(1 << 1))
    with pytest.raises(BlockError, match="marked corrupt"):
        Qcow2.open(str(image), readonly=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a log line, not a Python warning
        with Qcow2.open(str(image)) as q:
            assert q.read(0, 10) == b"\x5a" * 10
            assert q.info().format_specific["corrupt"] is True
    assert [r.levelname for r in caplog.records if "marked corrupt" in r.message] == [
        "WARNING"]
    with Qcow2.open(str(image), readonly=False, for_check=True) as q:
        r = q.check(repair="all")
        assert r.clean
    with Qcow2.open(str(image), readonly=False) as q:   # the bit is gone
        q.write(0, b"ok")


def test_header_extension_overflow(image: Path) -> None:
    with Qcow2.open(str(image)) as q:
        hl = q.h.header_length
    patch(image, hl, u32(0x12345678) + u32(0xFFFFFFF0))
    fails(image, "header extension", CorruptImageError)
    patch(image, 100, u32(4096 + 8))
    fails(image, "header_length", CorruptImageError)
    patch(image, 100, u32(107))
    fails(image, "header_length", CorruptImageError)


def test_backing_name_bounds(image: Path) -> None:
    patch(image, 8, u64(4000) + u32(500))
    fails(image, "backing file name", CorruptImageError)
    patch(image, 8, u64(1024) + u32(2000))
    fails(image, "backing file name length", CorruptImageError)


def _first_l2(path: Path) -> tuple[int, int]:
    with Qcow2.open(str(path)) as q:
        return q.l1_offset, q.l1[0] & OFFSET_MASK


def test_l1_entry_outside_file_and_at_header(image: Path) -> None:
    l1, _ = _first_l2(image)
    patch(image, l1, u64((1 << 40) | OFLAG_COPIED))
    err = fails(image, "L2 table", CorruptImageError)
    assert err.offset == 1 << 40
    patch(image, l1, u64(OFLAG_COPIED | 512))
    fails(image, "not cluster aligned", CorruptImageError)


def test_l2_entries_bad(image: Path) -> None:
    _, l2 = _first_l2(image)
    patch(image, l2, u64((1 << 44) | OFLAG_COPIED))
    err = fails(image, "past the end of the file", CorruptImageError)
    assert err.table == "L2 table" and err.offset == l2
    patch(image, l2, u64(OFLAG_COMPRESSED | (1 << 50)))
    fails(image, "compressed", CorruptImageError)
    patch(image, l2, u64(OFLAG_COMPRESSED | 8192))    # points at garbage that won't inflate
    fails(image, "compressed cluster", CorruptImageError)
    patch(image, l2, u64(OFLAG_COPIED | 4096 | 0x200 >> 1))   # reserved bits
    fails(image, "reserved bits", CorruptImageError)


def test_refcount_block_outside_file(image: Path) -> None:
    with Qcow2.open(str(image)) as q:
        rt = q.refs.table_offset
    patch(image, rt, u64(1 << 45))
    with Qcow2.open(str(image)) as q:        # reads do not need refcounts
        assert q.read(0, 4) == b"\x5a" * 4
        r = q.check()
        assert not r.clean
    with Qcow2.open(str(image), readonly=False) as q:
        with pytest.raises(CorruptImageError, match="refcount block"):
            q.write(2 * MiB, b"x" * 4096)


def test_refcount_overflow(tmp_path: Path) -> None:
    img = tmp_path / "r1.qcow2"
    Qcow2.create(str(img), MiB, refcount_bits=1, cluster_size=4096)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"a" * 8192)
        with pytest.raises(BlockError, match="refcount overflow"):
            q.refs.update(0, 1, +1)
        assert q.refs.get(0) == 1                 # nothing changed
        for i in range(4):                        # compressed writes never share a cluster
            q.write_compressed(65536 + i * 4096, b"z" * 4096)
        assert q.check().clean


def test_snapshot_table_bad(image: Path) -> None:
    patch(image, 60, u32(100000))
    fails(image, "snapshots", CorruptImageError)
    patch(image, 60, u32(3) + u64(1 << 40))
    fails(image, "snapshot table", CorruptImageError)


def test_extended_l2_bad_bitmaps(tmp_path: Path) -> None:
    img = tmp_path / "x.qcow2"
    Qcow2.create(str(img), MiB, extended_l2=True, cluster_size=16384)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"x" * 512)
    _, l2 = _first_l2(img)
    patch(img, l2 + 8, u64(1 | 1 << 32))            # subcluster 0 allocated and zero
    fails(img, "both allocated and zero", CorruptImageError)
    patch(img, l2, u64(0) + u64(1))                  # allocated without a host cluster
    fails(img, "no host cluster", CorruptImageError)


def test_create_rejects_bad_options(tmp_path: Path) -> None:
    p = str(tmp_path / "n.qcow2")
    with pytest.raises(BlockError, match="cluster_size"):
        Qcow2.create(p, MiB, cluster_size=3000)
    with pytest.raises(BlockError, match="too large"):
        Qcow2.create(p, (1 << 63) - 512, cluster_size=512)
    with pytest.raises(BlockError, match="lazy_refcounts"):
        Qcow2.create(p, MiB, compat="0.10", lazy_refcounts=True)
    with pytest.raises(ValueError, match="no create option"):
        Qcow2.create(p, MiB, nonsense=1)


def test_huge_sparse_file_and_shared_refcount_blocks(tmp_path: Path) -> None:
    """check() work stays proportional to what the file holds, not to its size."""
    import time

    img = tmp_path / "sparse.qcow2"
    Qcow2.create(str(img), MiB, cluster_size=512)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"x" * 100000)
    os.truncate(img, 1 << 40)                  # 2^31 clusters of 512 bytes, all holes
    t0 = time.monotonic()
    with Qcow2.open(str(img)) as q:
        assert q.check().clean
        rt, blk, n = q.refs.table_offset, q.refs.table[0], q.refs.table_clusters * 64
    patch(img, rt, u64(blk) * n)               # every table entry names the same block
    with Qcow2.open(str(img)) as q:
        r = q.check()
        assert r.corruptions >= n - 1
        assert any("overlaps refcount block" in m for m in r.messages)
    assert time.monotonic() - t0 < 5


def test_check_work_is_bounded(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmforge_qcow2 import check

    monkeypatch.setattr(check, "WORK_LIMIT", 3)
    with Qcow2.open(str(image)) as q:
        r = q.check()
    assert r.check_errors == 1 and "aborted" in r.messages[-1]
