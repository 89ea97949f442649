"""A new image is byte for byte the one ``qemu-img create`` makes with the same
options: header, header extensions, L1 table, refcount table and blocks (their
places included), and the file's length."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, qemu_check, qemu_img

from vmforge.block.driver import parse_size
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu


def _both(tmp_path: Path, size: str, opts: str) -> tuple[Path, Path]:
    q, v = tmp_path / "qemu.qcow2", tmp_path / "vmforge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, str(q), size)
    kw = dict(kv.split("=", 1) for kv in opts.split(",") if kv)
    Qcow2.create(str(v), parse_size(size), **kw)
    return q, v


@pytest.mark.parametrize("size", ["0", "1M", "1G", "20G"])
@pytest.mark.parametrize("opts", [
    "cluster_size=65536",
    "cluster_size=512",                       # the L1 table outgrows the first block
    "cluster_size=512,refcount_bits=64",
    "cluster_size=1024,refcount_bits=1",
    "cluster_size=4096,refcount_bits=8",      # no feature table at 4k and below
    "cluster_size=2097152",
    "refcount_bits=64,lazy_refcounts=on",
    "compat=0.10,cluster_size=2048",
    "extended_l2=on,cluster_size=16384",
    "compression_type=zstd",
])
def test_layout_is_qemu_imgs(tmp_path: Path, size: str, opts: str) -> None:
    q, v = _both(tmp_path, size, opts)
    assert v.read_bytes() == q.read_bytes()


@pytest.mark.parametrize("size,opts", [
    ("4T", "cluster_size=65536"),
    ("3T", "cluster_size=4096,refcount_bits=1"),
    ("64M", "preallocation=metadata"),
    ("16M", "preallocation=metadata,cluster_size=512"),   # refcount blocks on the way
    ("8M", "preallocation=metadata,cluster_size=512,refcount_bits=64"),
    ("8M", "preallocation=metadata,extended_l2=on"),
    ("16M", "preallocation=falloc"),
    ("8M", "preallocation=falloc,cluster_size=512,refcount_bits=1"),
    ("8M", "preallocation=full,extended_l2=on"),
    ("8M", "preallocation=full,cluster_size=4096"),
    ("64M", "data_file=data.raw"),
    ("8M", "data_file=data.raw,data_file_raw=on,preallocation=metadata"),
])
def test_layout_is_qemu_imgs_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  size: str, opts: str) -> None:
    monkeypatch.chdir(tmp_path)
    q, v = _both(tmp_path, size, opts)
    assert v.read_bytes() == q.read_bytes()


@pytest.mark.parametrize("opts", ["", "compat=0.10", "cluster_size=512"])
def test_layout_with_backing_file(tmp_path: Path, opts: str) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "64M")
    q, v = _both(tmp_path, "64M", ",".join(
        filter(None, [opts, f"backing_file={tmp_path / 'base.qcow2'}", "backing_fmt=qcow2"])))
    assert v.read_bytes() == q.read_bytes()


@pytest.mark.parametrize("backing", [False, True])
def test_size_zero_checks_clean(tmp_path: Path, backing: bool) -> None:
    """An empty image has no L1 table; nothing leaks (vmforge's check and QEMU's)."""
    opts = {}
    if backing:
        qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "1M")
        opts = {"backing_file": str(tmp_path / "base.qcow2"), "backing_fmt": "qcow2"}
    img = tmp_path / "zero.qcow2"
    Qcow2.create(str(img), 0, **opts)
    assert_qemu_clean(img)
    with Qcow2.open(str(img)) as q:
        res = q.check()
    theirs = qemu_check(img)
    assert res.clean, res.messages
    assert res.to_json() == theirs


@pytest.mark.parametrize("new_size", [512, 0])
def test_shrink_to_one_sector_or_none_checks_clean(tmp_path: Path, new_size: int) -> None:
    """(``qemu-img resize`` refuses 0, the driver may do it: nothing leaks either way.)"""
    img = tmp_path / "s.qcow2"
    Qcow2.create(str(img), 8 << 20)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"\x5a" * (4 << 20))
        q.truncate(new_size)
    assert_qemu_clean(img)
    with Qcow2.open(str(img)) as q:
        res = q.check()
        assert q.read(0, new_size) == b"\x5a" * new_size
    assert res.clean, res.messages
    assert res.to_json() == qemu_check(img)
