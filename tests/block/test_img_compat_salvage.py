"""``vmforge img convert --salvage`` as qemu-img 7.2's: a read that fails is retried
sector by sector, each unreadable 512-byte sector is written as zeros and reported as
``warning: error while reading offset N: ...`` (nothing with -q); without --salvage the
convert stops with qemu-img's error.  The bad sectors: a compressed cluster whose data
no longer inflates (QEMU fails it with EIO, vmforge's qcow2 as corrupt)."""

from __future__ import annotations

import struct

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


def _spoil_compressed_cluster(path: str, index: int) -> None:
    with open(path, "r+b") as f:
        f.seek(20)
        cluster_bits = struct.unpack(">I", f.read(4))[0]
        f.seek(40)
        l1 = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2 + 8 * index)
        entry = struct.unpack(">Q", f.read(8))[0]
        assert entry & (1 << 62)           # compressed
        f.seek(entry & ((1 << (62 - (cluster_bits - 8))) - 1))
        f.write(b"\xff" * 16)


@pytest.fixture
def spoiled(tmp_path, monkeypatch, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "plain.qcow2", "1M")
    qemu("io", "-c", "write -P 7 0 64k", "-c", "write -P 8 64k 64k", "-c",
         "write -P 9 512k 64k", "plain.qcow2")
    qemu("img", "convert", "-c", "-O", "qcow2", "plain.qcow2", "bad.qcow2")
    _spoil_compressed_cluster("bad.qcow2", 1)


@pytest.mark.parametrize("target", ["raw", "qcow2"])
def test_salvage_as_qemu_img(spoiled, img, qemu, target) -> None:
    theirs = qemu("img", "convert", "--salvage", "-O", target, "bad.qcow2", f"t.{target}")
    ours = img("--qemu-img-compat", "convert", "--salvage", "-O", target, "bad.qcow2",
               f"o.{target}")
    assert (ours.rc, ours.out, ours.err) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert len(ours.err.splitlines()) == 128           # one line per sector of the cluster
    assert qemu("img", "compare", f"o.{target}", f"t.{target}").returncode == 0
    quiet = img("convert", "-q", "--salvage", "-O", target, "bad.qcow2", f"q.{target}")
    assert (quiet.rc, quiet.err) == (0, "")


def test_without_salvage_the_read_error_stops_convert(spoiled, img, qemu) -> None:
    theirs = qemu("img", "convert", "-O", "raw", "bad.qcow2", "t.raw", check=False)
    ours = img("--qemu-img-compat", "convert", "-O", "raw", "bad.qcow2", "o.raw")
    assert (ours.rc, ours.err) == (theirs.returncode, theirs.stderr)
