"""``resize --shrink`` gives the space back as ``qemu-img resize --shrink`` does:
the same file length, the same ``qemu-img check`` report, the same guest data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, qemu_check, qemu_img, qemu_io

from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


def _same_report(a: Path, b: Path) -> None:
    ra, rb = qemu_check(a), qemu_check(b)
    ra.pop("filename")
    rb.pop("filename")
    assert ra == rb


@pytest.mark.parametrize("opts", [
    "cluster_size=65536",
    "cluster_size=512",
    "cluster_size=512,refcount_bits=64",
    "cluster_size=4096,refcount_bits=1",
    "lazy_refcounts=on",
    "extended_l2=on",
    "preallocation=metadata",
    "compat=0.10,cluster_size=1024",
])
@pytest.mark.parametrize("new_size", [3 * MiB + 1536, 512])
def test_shrink_like_qemu_img(tmp_path: Path, opts: str, new_size: int) -> None:
    a, b = tmp_path / "qemu.qcow2", tmp_path / "vmforge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, str(a), "24M")
    qemu_io(a, "write -P 1 0 10M", "write -P 2 14M 1M", "write -P 3 23M 1M")
    shutil.copy(a, b)
    qemu_img("resize", "-q", "--shrink", "-f", "qcow2", str(a), str(new_size))
    with Qcow2.open(str(b), readonly=False) as q:
        q.truncate(new_size)
    assert_qemu_clean(b)
    _same_report(a, b)
    assert b.stat().st_size == a.stat().st_size
    p = qemu_img("compare", "-f", "qcow2", "-F", "qcow2", str(a), str(b), check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_shrink_compressed_and_regrow(tmp_path: Path) -> None:
    src, a, b = tmp_path / "src.qcow2", tmp_path / "qemu.qcow2", tmp_path / "vmforge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(src), "64M")
    qemu_io(src, "write -P 7 0 30M", "write -P 8 40M 20M")
    qemu_img("convert", "-c", "-O", "qcow2", str(src), str(a))
    shutil.copy(a, b)
    qemu_img("resize", "-q", "--shrink", "-f", "qcow2", str(a), "35M")
    with Qcow2.open(str(b), readonly=False) as q:
        q.truncate(35 * MiB)
    _same_report(a, b)
    assert b.stat().st_size == a.stat().st_size
    with Qcow2.open(str(b), readonly=False) as q:   # the space is reused, the tail is zero
        q.truncate(64 * MiB)
        q.write(50 * MiB, b"\x09" * MiB)
        assert q.read(40 * MiB, MiB) == bytes(MiB)
    assert_qemu_clean(b)
