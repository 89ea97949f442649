"""``vmforge img convert -l`` converts an internal snapshot's disk, read-only, as
qemu-img 7.2 does: ``snapshot.id=ID``, ``snapshot.name=NAME`` (both: both must match)
or a bare ``NAME`` (an id first, then a name); errors in qemu-img's words."""

from __future__ import annotations

import hashlib
import os

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.fixture
def snapped(tmp_path, monkeypatch, qemu) -> None:
    """sn.qcow2: snapshots 'first' (pattern 1) and 'second' (2, 2 MiB in), then 3."""
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "sn.qcow2", "4M")
    qemu("io", "-c", "write -P 1 0 64k", "sn.qcow2")
    qemu("img", "snapshot", "-c", "first", "sn.qcow2")
    qemu("io", "-c", "write -P 2 2M 64k", "sn.qcow2")
    qemu("img", "snapshot", "-c", "second", "sn.qcow2")
    qemu("io", "-c", "write -P 3 0 128k", "sn.qcow2")
    qemu("img", "create", "-q", "-f", "raw", "r.raw", "1M")


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


GOOD = ["snapshot.name=first", "snapshot.id=2", "snapshot.id=1,snapshot.name=first",
        "second", "1"]


@pytest.mark.parametrize("param", GOOD)
def test_convert_a_snapshot_as_qemu_img(snapped, img, qemu, param) -> None:
    qemu("img", "convert", "-l", param, "-O", "raw", "sn.qcow2", "theirs.raw")
    before = _digest("sn.qcow2")
    r = img("convert", "-l", param, "-O", "raw", "sn.qcow2", "ours.raw")
    assert r.rc == 0, r.err
    assert _digest("ours.raw") == _digest("theirs.raw")
    assert _digest("sn.qcow2") == before              # read-only
    r = img("convert", "-l", param, "-O", "qcow2", "sn.qcow2", "ours.qcow2")
    assert qemu("img", "compare", "-F", "raw", "ours.qcow2", "theirs.raw").returncode == 0


BAD = [["-l", "snapshot.name=nosuch", "sn.qcow2"], ["-l", "snapshot.id=7", "sn.qcow2"],
       ["-l", "nosuch", "sn.qcow2"], ["-l", "snapshot.foo=1", "sn.qcow2"],
       ["-l", "snapshot.id=1,snapshot.name=second", "sn.qcow2"],
       ["-l", "first", "r.raw"], ["-l", "first", "sn.qcow2", "r.raw"]]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_bad_snapshot_convert_as_qemu_img(snapped, img, qemu, argv) -> None:
    theirs = qemu("img", "convert", "-O", "raw", *argv, "theirs.raw", check=False)
    ours = img("--qemu-img-compat", "convert", "-O", "raw", *argv, "ours.raw")
    assert (ours.rc, ours.err) == (theirs.returncode, theirs.stderr)
    assert not os.path.exists("ours.raw")
