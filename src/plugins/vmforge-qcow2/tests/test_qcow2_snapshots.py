"""Internal snapshots made and deleted by vmforge, checked by qemu-img (and the reverse)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_img, qemu_io, to_raw

from vmforge.block import BlockError
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


@pytest.mark.parametrize("opts", [{}, {"compat": "0.10", "cluster_size": 4096},
                                  {"refcount_bits": 8, "cluster_size": 512}])
def test_vmforge_snapshots_seen_by_qemu(tmp_path: Path, opts: dict) -> None:
    img = tmp_path / "s.qcow2"
    Qcow2.create(str(img), 2 * MiB, **opts)
    states = {}
    with Qcow2.open(str(img), readonly=False) as q:
        model = bytearray(2 * MiB)
        q.write(0, pattern(MiB, 1))
        model[:MiB] = pattern(MiB, 1)
        q.write_compressed(MiB + q.cluster_size * 2, b"c" * q.cluster_size)
        model[MiB + q.cluster_size * 2:MiB + q.cluster_size * 3] = b"c" * q.cluster_size
        first = q.create_snapshot("first", vm_state_size=0)
        states["first"] = bytes(model)
        assert first.id == "1" and first.disk_size == 2 * MiB
        q.write(1000, b"x" * 300000)
        model[1000:301000] = b"x" * 300000
        q.write_zeroes(MiB, 65536, may_unmap=True)
        model[MiB:MiB + 65536] = bytes(65536)
        q.create_snapshot("second")
        states["second"] = bytes(model)
        q.write(5, b"after")
        model[5:10] = b"after"
        with pytest.raises(BlockError, match="exists"):
            q.create_snapshot("first")
    listing = qemu_img("snapshot", "-l", str(img)).stdout
    assert "first" in listing and "second" in listing
    assert_qemu_clean(img)
    for name, content in states.items():
        assert to_raw(img, tmp_path / f"{name}.raw", snapshot=name) == content
    assert to_raw(img, tmp_path / "now.raw") == model
    # vmforge deletes one, qemu-img the other
    with Qcow2.open(str(img), readonly=False) as q:
        q.delete_snapshot("first")
        assert [s.name for s in q.snapshots()] == ["second"]
        with pytest.raises(BlockError, match="no snapshot"):
            q.delete_snapshot("first")
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "second.raw", snapshot="second") == states["second"]
    qemu_img("snapshot", "-d", "second", str(img))
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "now.raw") == model
    with Qcow2.open(str(img)) as q:
        assert q.snapshots() == [] and q.check().clean


def test_delete_qemu_snapshot_restores_copied_flags(tmp_path: Path) -> None:
    img = tmp_path / "q.qcow2"
    qemu_img("create", "-f", "qcow2", str(img), "1M")
    qemu_io(img, "write -P 0x11 0 1M")
    qemu_img("snapshot", "-c", "base", str(img))
    with Qcow2.open(str(img), readonly=False) as q:
        q.delete_snapshot("base")
        # refcounts are back to 1: writes go in place again (no new clusters)
        before = q.refs.alloc_end
        q.write(0, b"\x22" * 65536)
        assert q.refs.alloc_end == before
    assert_qemu_clean(img)
    assert qemu_io(img, "read -P 0x22 0 64k", "read -P 0x11 64k 960k").count("read ") == 2


def test_revert_matches_qemu(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    qemu_img("create", "-f", "qcow2", str(ours), "1M")
    qemu_io(ours, "write -P 0x11 0 512k")
    qemu_img("snapshot", "-c", "s", str(ours))
    qemu_io(ours, "write -P 0x22 256k 512k", "write -z 0 64k")
    theirs.write_bytes(ours.read_bytes())
    qemu_img("snapshot", "-a", "s", str(theirs))
    with Qcow2.open(str(ours), readonly=False) as q:
        q.revert_snapshot("s")
        q.write(900 * 1024, b"\x33" * 1000)     # the reverted image stays writable
    qemu_io(theirs, "write -P 0x33 900k 1000")
    assert_qemu_clean(ours)
    assert to_raw(ours, tmp_path / "a.raw") == to_raw(theirs, tmp_path / "b.raw")
    assert to_raw(ours, tmp_path / "c.raw", snapshot="s")[:512 * 1024] == b"\x11" * 512 * 1024
