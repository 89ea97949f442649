"""Clusters freed by a discard, a zero write that may unmap, or a snapshot's deletion
are punched out of the file once nothing points at them, as qemu-img 7.2 does (its
discard passthrough for requests and snapshots): the same operations leave the same
file, byte for byte, and the space goes back.  Copy-on-write's frees are not passed
down (QEMU's ``pass-discard-other`` is off)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, qemu_img, qemu_io

from vmforge.block import BlockBackend
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


def _pair(tmp_path: Path, *writes: str) -> tuple[Path, Path]:
    """The same image twice: one for qemu, one for vmforge."""
    q, v = tmp_path / "q.qcow2", tmp_path / "v.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(q), "16M")
    qemu_io(q, *writes)
    shutil.copy(q, v)
    return q, v


def _punched(path: Path) -> int:
    """Bytes of the file in holes."""
    return os.stat(path).st_size - os.stat(path).st_blocks * 512


@pytest.mark.parametrize("op", ["discard", "zero-unmap"])
def test_a_discard_gives_the_space_back_as_qemu_does(tmp_path: Path, op: str) -> None:
    q, v = _pair(tmp_path, "write -P 1 0 4M")
    allocated = os.stat(v).st_blocks
    qemu_io(q, "discard 0 2M" if op == "discard" else "write -z -u 0 2M")
    with BlockBackend.open(str(v), "qcow2", readonly=False) as bb:
        if op == "discard":
            bb.discard(0, 2 * MiB)
        else:
            bb.write_zeroes(0, 2 * MiB, may_unmap=True)
    assert v.read_bytes() == q.read_bytes()
    assert os.stat(v).st_blocks * 512 <= allocated * 512 - 2 * MiB
    assert_qemu_clean(v)


@pytest.mark.parametrize("rewrite", [True, False])
def test_deleting_a_snapshot_punches_what_only_it_held(tmp_path: Path, rewrite: bool) -> None:
    q, v = _pair(tmp_path, "write -P 1 0 4M")
    for p in (q, v):
        qemu_img("snapshot", "-c", "s1", str(p))
        if rewrite:     # the active image's clusters copied: the old ones are the snapshot's
            qemu_io(p, "write -P 2 0 4M")
    qemu_img("snapshot", "-d", "s1", str(q))
    with Qcow2.open(str(v), readonly=False) as img:
        img.delete_snapshot("s1")
    assert v.read_bytes() == q.read_bytes()
    if rewrite:
        assert _punched(v) >= 4 * MiB
    assert_qemu_clean(v)


def test_copy_on_write_frees_stay_in_the_file(tmp_path: Path) -> None:
    q, v = _pair(tmp_path, "write -c -P 3 0 64k")     # a compressed cluster, rewritten
    qemu_io(q, "write -P 4 0 64k")
    with BlockBackend.open(str(v), "qcow2", readonly=False) as bb:
        bb.write(0, b"\x04" * 65536)
    assert v.read_bytes() == q.read_bytes()       # (the freed cluster's bytes are there)
