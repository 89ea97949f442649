"""``commit`` empties the top as qemu-img 7.2 does: where QEMU can
(``make_completely_empty``) the top is the very file qemu-img leaves, byte for
byte (a new empty table set, the file cut after the L1 table); where it cannot
(a version 2 image, an internal snapshot), every cluster is freed and the top
reads as its base again."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmforge.testing.qemu_tools import needs_qemu, qemu_img, qemu_io, vmforge_img

pytestmark = needs_qemu

MiB = 1 << 20


def _pair(tmp_path: Path, create: list[str], size: str = "64M") -> tuple[Path, Path]:
    """The same base and top, made by qemu-img and qemu-io, in ``q/`` and ``v/``."""
    tops = []
    for side in ("q", "v"):
        d = tmp_path / side
        d.mkdir()
        qemu_img("create", "-q", "-f", "qcow2", str(d / "base.qcow2"), size)
        qemu_img("create", "-q", "-f", "qcow2", *create, "-b", "base.qcow2", "-F", "qcow2",
                 str(d / "top.qcow2"))
        qemu_io(d / "top.qcow2", "write -P 0x11 0 3M", "write -P 0x22 40M 1M",
                "write -z 8M 64k", fmt="qcow2")
        tops.append(d / "top.qcow2")
    assert tops[0].read_bytes() == tops[1].read_bytes()
    return tops[0], tops[1]


@pytest.mark.parametrize("create", [[], ["-o", "lazy_refcounts=on"],
                                    ["-o", "cluster_size=512"],
                                    ["-o", "cluster_size=2M,refcount_bits=64"]],
                         ids=["default", "lazy-refcounts", "512-byte-clusters",
                              "2M-clusters"])
def test_the_emptied_top_is_the_file_qemu_img_leaves(tmp_path: Path,
                                                     create: list[str]) -> None:
    theirs, ours = _pair(tmp_path, create)
    qemu_img("commit", "-q", str(theirs))
    vmforge_img("commit", "-q", str(ours))
    assert ours.stat().st_size == theirs.stat().st_size
    assert ours.read_bytes() == theirs.read_bytes()
    qemu_img("check", str(ours))
    qemu_img("compare", str(ours), str(ours.parent / "base.qcow2"))
    # and it takes writes again as an image does
    qemu_io(ours, "write -P 0x33 5M 128k", fmt="qcow2")
    qemu_img("check", str(ours))


@pytest.mark.parametrize("case", ["compat-0.10", "snapshot"])
def test_where_qemu_cannot_every_cluster_is_freed(tmp_path: Path, case: str) -> None:
    create = ["-o", "compat=0.10"] if case == "compat-0.10" else []
    _theirs, ours = _pair(tmp_path, create)
    if case == "snapshot":
        qemu_img("snapshot", "-c", "s1", str(ours))
    size = ours.stat().st_size
    vmforge_img("commit", "-q", str(ours))
    assert ours.stat().st_size >= size                  # not rewritten nor cut
    qemu_img("check", str(ours))
    if case == "snapshot":
        assert "s1" in qemu_img("snapshot", "-l", str(ours)).stdout
    qemu_img("compare", str(ours), str(ours.parent / "base.qcow2"))
