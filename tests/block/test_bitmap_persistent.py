"""qcow2's persistent dirty bitmaps while a BlockBackend has the image open
read-write: writes are tracked as QEMU tracks them (the same bits as qemu-io's
writes leave), in use while open, stored back on close."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.block.jobkit import MIB, assert_check_clean, qemu_img
from vmforge.block import BlockBackend
from vmforge.block.jobs import JobRegistry, start_mirror

pytestmark = pytest.mark.formats("qcow2")

#: (offset, length) of the writes, zero-writes (z) and discards (d) done both ways
OPS = [("w", 0, 512), ("w", 70000, 3), ("z", 1 * MIB, 200000), ("w", 3 * MIB - 1, 2),
       ("d", 2 * MIB, 65536)]


def _image(path: Path) -> str:
    p = str(path)
    for args in (("create", "-f", "qcow2", p, "4M"), ("bitmap", "--add", p, "b0"),
                 ("bitmap", "--add", "-g", "4096", p, "fine"),
                 ("bitmap", "--add", "--disable", p, "off")):
        r = qemu_img(*args)
        assert r.returncode == 0, r.stderr
    return p


def _flags(path: str) -> dict[str, list[str]]:
    r = qemu_img("info", "-U", "--output=json", path)
    bms = json.loads(r.stdout)["format-specific"]["data"].get("bitmaps", [])
    return {b["name"]: b["flags"] for b in bms}


def _bits(path: str) -> dict[str, bytes]:
    with BlockBackend.open(path, "qcow2") as bb:
        return {n: bb.top.bitmap_bits(n)[0] for n in ("b0", "fine", "off")}


def test_writes_mark_the_bitmaps_as_qemu_does(tmp_path: Path) -> None:
    import subprocess

    from vmforge.testing.oracles import require_program

    mine, theirs = _image(tmp_path / "mine.qcow2"), _image(tmp_path / "qemu.qcow2")
    bb = BlockBackend.open(mine, "qcow2", readonly=False, persistent_bitmaps=True)
    assert _flags(mine) == {"b0": ["in-use", "auto"], "fine": ["in-use", "auto"],
                            "off": []}
    cmds = []
    for op, off, n in OPS:
        if op == "w":
            bb.write(off, b"x" * n)
            cmds += ["-c", f"write {off} {n}"]
        elif op == "z":
            bb.write_zeroes(off, n)
            cmds += ["-c", f"write -z {off} {n}"]
        else:
            bb.discard(off, n)
            cmds += ["-c", f"discard {off} {n}"]
    bb.close()
    qemu_io = require_program("qemu-io", "qemu-utils")
    r = subprocess.run([qemu_io, "-f", "qcow2", *cmds, theirs], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert _flags(mine) == _flags(theirs) == {"b0": ["auto"], "fine": ["auto"], "off": []}
    got, want = _bits(mine), _bits(theirs)
    assert got == want
    assert any(got["b0"]) and not any(got["off"])
    assert_check_clean(mine)


def test_bitmaps_stay_with_the_image_a_mirror_leaves(tmp_path: Path) -> None:
    src = _image(tmp_path / "src.qcow2")
    bb = BlockBackend.open(src, "qcow2", readonly=False, persistent_bitmaps=True)
    bb.write(0, b"a" * 4096)
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", registry=JobRegistry())
    assert job.wait_ready(60)
    job.complete()
    assert job.wait(60)
    bb.write(2 * MIB, b"b" * 4096)            # on the copy: not the source's bitmap
    bb.close()
    assert _flags(src)["b0"] == ["auto"]
    b0 = _bits(src)["b0"]
    assert b0[0] & 1 and not b0[2 * MIB // 65536 // 8]
    assert_check_clean(src)


def test_a_virtio_blk_disk_tracks_its_bitmaps(tmp_path: Path) -> None:
    """-drive file=X.qcow2 (the device opens its own backend): QEMU's -drive loads them."""
    pytest.importorskip("vmforge_virtio")
    from vmforge_virtio.blk import VirtioBlk

    path = _image(tmp_path / "disk.qcow2")
    dev = VirtioBlk(drive=path, format="qcow2")
    assert _flags(path)["b0"] == ["in-use", "auto"]
    dev.backend.write(MIB, b"g" * 512)
    dev.unrealize()
    assert _flags(path)["b0"] == ["auto"]
    assert _bits(path)["b0"][MIB // 65536 // 8] == 1 << (MIB // 65536 % 8)
