"""check() finds what qemu-img check finds, and repairs it."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_check, qemu_img, to_raw

from vmforge.block import BlockError, CorruptImageError
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.l2 import OFFSET_MASK, OFLAG_COPIED

pytestmark = needs_qemu
MiB = 1 << 20


def _image(tmp_path: Path, **opts: object) -> tuple[Path, bytes]:
    img = tmp_path / "c.qcow2"
    Qcow2.create(str(img), 2 * MiB, **opts)
    data = pattern(MiB, 4)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, data)
    return img, data + bytes(MiB)


def _l2_entries(q: Qcow2) -> tuple[int, list[int]]:
    l2off = q.l1[0] & OFFSET_MASK
    raw = os.pread(q.f.fd, q.cs, l2off)
    return l2off, list(struct.unpack(f">{q.cs // 8}Q", raw))


def test_leaks_found_and_repaired(tmp_path: Path) -> None:
    img, data = _image(tmp_path)
    with Qcow2.open(str(img), readonly=False) as q:
        lost = q.refs.alloc(3)               # three clusters nobody references
        q.f.pwrite(lost, bytes(3 * q.cs))
        _, l2 = _l2_entries(q)
        q.refs.update((l2[0] & OFFSET_MASK) >> q.cb, 1, +1)   # and one refcount too high
    theirs = qemu_check(img)
    assert theirs["leaks"] == 4
    assert theirs["corruptions"] == 1          # OFLAG_COPIED on the refcount-2 cluster
    with Qcow2.open(str(img)) as q:
        r = q.check()
        assert (r.leaks, r.corruptions) == (4, 1)
        assert r.image_end_offset == theirs["image-end-offset"]
        assert any("Leaked cluster" in m for m in r.messages)
        assert r.to_json()["leaks"] == 4
    with Qcow2.open(str(img), readonly=False) as q:
        r = q.check(repair="leaks")
        assert r.leaks_fixed == 4 and r.leaks == 0 and r.clean
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "r.raw") == data


def test_refcount_too_low_and_shared_cluster(tmp_path: Path) -> None:
    """Two L2 entries point at one data cluster: qemu-img and we agree, -r all fixes."""
    img, _ = _image(tmp_path)
    with Qcow2.open(str(img), readonly=False) as q:
        l2off, l2 = _l2_entries(q)
        os.pwrite(q.f.fd, struct.pack(">Q", l2[0]), l2off + 8)   # entry 1 -> cluster of 0
    theirs = qemu_check(img)
    with Qcow2.open(str(img)) as q:
        r = q.check()
        assert r.corruptions == theirs.get("corruptions", 0) >= 1
        assert r.leaks == theirs.get("leaks", 0) == 1
        assert any("refcount=1 reference=2" in m for m in r.messages)
        assert any("overlaps" not in m for m in r.messages)
        with pytest.raises(BlockError):
            q.check(repair="all")            # read-only: cannot repair
    with Qcow2.open(str(img), readonly=False) as q:
        r = q.check(repair="all")
        assert r.clean, r.messages
        assert r.corruptions_fixed >= 1 and r.leaks_fixed == 1
    assert_qemu_clean(img)


def test_zero_refcount_rebuilds_structure(tmp_path: Path) -> None:
    img, data = _image(tmp_path, cluster_size=4096)
    with Qcow2.open(str(img), readonly=False) as q:
        l2off = q.l1[0] & OFFSET_MASK
        q.refs.update(l2off >> q.cb, 1, -1)   # the L2 table now looks free
        q.refs.update(5, 1, -1)               # and the first data cluster? (whatever is there)
    theirs = qemu_check(img)
    assert theirs.get("corruptions", 0) >= 1
    with Qcow2.open(str(img)) as q:
        r = q.check()
        assert r.corruptions >= 1
        assert any("refcount=0" in m for m in r.messages)
    with Qcow2.open(str(img), readonly=False) as q:
        r = q.check(repair="all")
        assert r.clean and r.corruptions_fixed >= 1, r.messages
        assert any("Rebuilding refcount structure" in m for m in r.messages)
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "r.raw") == data
    with Qcow2.open(str(img), readonly=False) as q:   # still writable and consistent
        q.write(MiB + 5, b"after")
    assert_qemu_clean(img)


def test_copied_flag_errors_repaired(tmp_path: Path) -> None:
    img, _ = _image(tmp_path)
    with Qcow2.open(str(img), readonly=False) as q:
        l2off, l2 = _l2_entries(q)
        os.pwrite(q.f.fd, struct.pack(">Q", l2[2] & ~OFLAG_COPIED), l2off + 16)
    assert qemu_check(img)["corruptions"] == 1
    with Qcow2.open(str(img), readonly=False) as q:
        assert q.check().corruptions == 1
        r = q.check(repair="all")
        assert r.clean and r.corruptions_fixed == 1
    assert_qemu_clean(img)


def test_entries_outside_file_and_overlapping_metadata(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    img, _ = _image(tmp_path)
    with Qcow2.open(str(img), readonly=False) as q:
        l2off, _ = _l2_entries(q)
        os.pwrite(q.f.fd, struct.pack(">Q", (1 << 40) | OFLAG_COPIED), l2off + 24)
        os.pwrite(q.f.fd, struct.pack(">Q", q.refs.table_offset | OFLAG_COPIED), l2off + 32)
    with Qcow2.open(str(img)) as q:
        r = q.check()
        assert r.corruptions >= 2
        assert any("past the end of the file" in m for m in r.messages)
        assert any("overlaps refcount table" in m for m in r.messages)
        with pytest.raises(CorruptImageError, match="L2 table"):
            q.read(3 * 65536, 10)
    with Qcow2.open(str(img), readonly=False) as q:
        # an in-place write over metadata is refused and marks the image corrupt
        with pytest.raises(CorruptImageError, match="refcount table"):
            q.write(4 * 65536, b"boom")
    with pytest.raises(BlockError, match="corrupt"):
        Qcow2.open(str(img), readonly=False)
    Qcow2.open(str(img)).close()
    assert "marked corrupt" in caplog.text
    info = qemu_img("info", str(img)).stdout
    assert "corrupt: true" in info


def test_lazy_refcounts_crash_is_repaired_on_open(tmp_path: Path) -> None:
    img = tmp_path / "lazy.qcow2"
    Qcow2.create(str(img), 2 * MiB, lazy_refcounts=True)
    q = Qcow2.open(str(img), readonly=False)
    q.write(0, pattern(MiB, 8))
    q.flush()              # L2 tables written; lazy refcounts are not
    q.f.close()            # "crash": no close, so refcounts were never written
    q.closed = True
    theirs = qemu_img("info", "--output", "json", str(img)).stdout
    assert '"dirty-flag": true' in theirs
    with Qcow2.open(str(img)) as ro:         # read-only: allowed, dirty reported
        assert ro.info().dirty
        assert ro.read(0, MiB) == pattern(MiB, 8)
    dirty = img.read_bytes()
    with Qcow2.open(str(img), readonly=False) as rw:   # read-write: repaired first
        assert not rw.info().dirty
    img2 = tmp_path / "lazy2.qcow2"                     # or on request: check -r all
    img2.write_bytes(dirty)
    with Qcow2.open(str(img2), readonly=False, for_check=True) as rw:
        assert rw.info().dirty
        r = rw.check(repair="all")
        assert r.clean and r.corruptions_fixed + r.leaks_fixed > 0
        assert not rw.info().dirty
    assert_qemu_clean(img2)
    assert_qemu_clean(img)
    assert "dirty-flag\": false" in qemu_img("info", "--output", "json", str(img)).stdout
    assert to_raw(img, tmp_path / "l.raw")[:MiB] == pattern(MiB, 8)


def test_check_result_matches_qemu_json_on_clean_image(tmp_path: Path) -> None:
    img, _ = _image(tmp_path)
    theirs = qemu_check(img)
    with Qcow2.open(str(img)) as q:
        ours = q.check().to_json()
    assert ours["check-errors"] == theirs["check-errors"] == 0
    assert ours["image-end-offset"] == theirs["image-end-offset"]


def test_bitmap_clusters_counted_like_qemu(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    img = tmp_path / "bm.qcow2"
    qemu_img("create", "-f", "qcow2", str(img), "8M")
    qemu_img("bitmap", "--add", str(img), "b0")
    from qcow2_oracle import qemu_io

    qemu_io(img, "write 1M 1M")            # dirties b0: bitmap data gets stored
    qemu_img("bitmap", "--add", str(img), "b1")
    theirs = qemu_check(img)
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    with Qcow2.open(str(img)) as q:
        ours = q.check().to_json()
        assert q.info().format_specific["bitmaps"] == info["format-specific"]["data"]["bitmaps"]
    assert ours.get("leaks", 0) == theirs.get("leaks", 0) == 0
    assert ours.get("corruptions", 0) == 0
    assert ours["image-end-offset"] == theirs["image-end-offset"]
    # writing with a driver that lacks bitmap support invalidates them (autoclear bit)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"\x07" * 512)
    assert "bitmaps" in caplog.text
    theirs = qemu_check(img)
    with Qcow2.open(str(img)) as q:
        assert q.check().leaks == theirs["leaks"] > 0
