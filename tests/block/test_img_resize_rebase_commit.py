"""``vmforge img resize``, ``rebase``, ``commit``, ``measure`` and ``snapshot -l``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vmforge.block import BlockBackend, driver_class
from vmforge.testing.images import MiB, write_mixed


def _ex(path: str, size: int = 2 * MiB, backing: str | None = None,
        fmt: str | None = None) -> str:
    kw = {"backing_file": backing, "backing_fmt": fmt} if backing else {}
    driver_class("example").create(path, size, **kw)
    return path


def _view(path: str) -> bytes:
    with BlockBackend.open(path) as bb:
        return bb.read(0, bb.size)


@pytest.mark.formats("raw")
def test_resize_like_qemu_img(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "r.raw")
    write_mixed(path, 2 * MiB)
    r = img("resize", "-f", "raw", path, "+1M")
    assert (r.rc, r.out) == (0, "Image resized.\n") and os.path.getsize(path) == 3 * MiB
    r = img("resize", "-f", "raw", path, "-512K")
    assert r.rc == 1 and "--shrink" in r.err and os.path.getsize(path) == 3 * MiB
    assert qemu("img", "resize", "-f", "raw", path, "-512K", check=False).returncode == 1
    assert img("resize", "--shrink", "-f", "raw", path, "-512K").rc == 0
    assert os.path.getsize(path) == 2 * MiB + 512 * 1024
    assert img("resize", "-q", "-f", "raw", path, "4M").out == ""
    assert os.path.getsize(path) == 4 * MiB
    r = img("resize", path, "5M")  # a probed raw image is never opened for writing
    assert r.rc == 1 and "-f raw" in r.err
    # to nothing: refused before any shrink question, as qemu-img (size 0 and -4M alike)
    for size in ("0", "-4M"):
        q = qemu("img", "resize", "--shrink", "-f", "raw", path, size, check=False)
        r = img("resize", "--shrink", "-f", "raw", path, size)
        assert (r.rc, r.err) == (1, q.stderr.replace("qemu-img:", "vmforge img:"))
        assert "New image size must be positive" in r.err
    assert os.path.getsize(path) == 4 * MiB


@pytest.mark.formats("example")
def test_resize_example_keeps_data(tmp_path, img) -> None:
    path = _ex(str(tmp_path / "e.ex"))
    with BlockBackend.open(path, readonly=False) as bb:
        bb.write(MiB, b"keep")
    assert img("resize", path, "64M").rc == 0  # the table moves: more than one block of it
    with BlockBackend.open(path) as bb:
        assert bb.size == 64 * MiB and bb.read(MiB, 4) == b"keep"
        assert bb.read(60 * MiB, 4) == bytes(4)
    assert img("check", path).rc == 0


@pytest.mark.formats("raw", "example")
def test_rebase_safe_keeps_what_the_guest_reads(tmp_path, img, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_mixed("old.raw", 2 * MiB, seed=1)
    write_mixed("new.raw", MiB, seed=2)
    _ex("top.ex", 2 * MiB, "old.raw", "raw")
    with BlockBackend.open("top.ex", readonly=False) as bb:
        bb.write(3, b"top data")
    before = _view("top.ex")
    r = img("rebase", "-b", "new.raw", "-F", "raw", "top.ex")
    assert r.rc == 0, r.err
    with BlockBackend.open("top.ex") as bb:
        assert bb.layers[1].filename == "new.raw"
        assert bb.read(0, bb.size) == before
    assert img("rebase", "-b", "", "top.ex").rc == 0  # flatten: no backing file at all
    with BlockBackend.open("top.ex") as bb:
        assert len(bb.layers) == 1 and bb.read(0, bb.size) == before


@pytest.mark.formats("raw", "example")
def test_rebase_unsafe_only_renames(tmp_path, img) -> None:
    write_mixed(str(tmp_path / "a.raw"), MiB, seed=1)
    write_mixed(str(tmp_path / "b.raw"), MiB, seed=2)
    top = _ex(str(tmp_path / "top.ex"), MiB, "a.raw", "raw")
    r = img("rebase", "-u", "-b", "b.raw", top)   # qemu-img 7.2 never probes it
    assert r.rc == 1 and "backing format must be specified" in r.err
    assert img("rebase", "-u", "-b", "b.raw", "-F", "raw", top).rc == 0
    info = img("info", "--output", "json", top).json()
    assert info["backing-filename"] == "b.raw" and info["backing-filename-format"] == "raw"
    with open(str(tmp_path / "b.raw"), "rb") as f:
        assert _view(top) == f.read()


@pytest.mark.formats("raw", "example")
def test_commit_writes_into_the_backing_file(tmp_path, img) -> None:
    base = str(tmp_path / "base.raw")
    write_mixed(base, 2 * MiB)
    top = _ex(str(tmp_path / "top.ex"), 3 * MiB, "base.raw", "raw")
    with BlockBackend.open(top, readonly=False) as bb:
        bb.write(1000, b"committed")
        bb.write_zeroes(MiB, 65536)
        bb.write(2 * MiB + 5, b"beyond the base")
    view = _view(top)
    r = img("commit", top)
    assert (r.rc, r.out) == (0, "Image committed.\n")
    with open(base, "rb") as f:
        assert f.read() == view  # the base grew to the top's size
    assert _view(top) == view
    r = img("commit", "-f", "raw", base)
    assert r.rc == 1 and "backing file" in r.err


@pytest.mark.formats("raw", "example")
def test_commit_refuses_a_probed_raw_base(tmp_path, img) -> None:
    base = str(tmp_path / "base.raw")
    data = write_mixed(base, MiB)
    top = _ex(str(tmp_path / "top.ex"), MiB, "base.raw", None)
    with BlockBackend.open(top, readonly=False) as bb:
        bb.write(0, b"header of another format?")
    r = img("commit", top)
    assert r.rc == 1 and "probed" in r.err and "rebase -u" in r.err
    with open(base, "rb") as f:
        assert f.read() == data
    assert img("rebase", "-u", "-b", "base.raw", "-F", "raw", top).rc == 0
    assert img("commit", top).rc == 0


@pytest.mark.formats("raw", "qcow2")
def test_commit_qcow2_overlay_like_qemu(tmp_path, img, qemu) -> None:
    for name in ("ours", "theirs"):
        write_mixed(str(tmp_path / f"{name}.raw"), 2 * MiB)
        q = str(tmp_path / f"{name}.qcow2")
        qemu("img", "create", "-q", "-f", "qcow2", "-b", f"{name}.raw", "-F", "raw", q)
        qemu("io", "-c", "write -P 7 100k 200k", "-c", "write -z 1M 64k", q)
    assert img("commit", str(tmp_path / "ours.qcow2")).rc == 0
    qemu("img", "commit", "-q", str(tmp_path / "theirs.qcow2"))
    with open(tmp_path / "ours.raw", "rb") as a, open(tmp_path / "theirs.raw", "rb") as b:
        assert a.read() == b.read()
    # the top is emptied, as qemu-img does: it reads the base again (not zeros)
    for name in ("ours", "theirs"):
        q, raw = str(tmp_path / f"{name}.qcow2"), str(tmp_path / f"{name}.raw")
        assert qemu("img", "compare", q, raw, check=False).returncode == 0, name
    tops = [json.loads(qemu("img", "map", "--output", "json", str(tmp_path / f"{n}.qcow2")
                            ).stdout) for n in ("ours", "theirs")]
    # no data left in either top (qemu-img keeps its zero clusters; they read as the base)
    assert not [e for top in tops for e in top if e["depth"] == 0 and e["data"]], tops


@pytest.mark.formats("raw", "example")
def test_measure(tmp_path, img) -> None:
    r = img("measure", "-O", "example", "--size", "1G")
    assert r.rc == 0
    lines = r.out.splitlines()
    assert lines[0].startswith("required size: ") and lines[1].startswith("fully allocated size")
    src = str(tmp_path / "m.raw")
    data = write_mixed(src, 4 * MiB)
    j = img("measure", "-f", "raw", "-O", "example", "--output", "json", src).json()
    assert set(j) == {"required", "fully-allocated"}
    blocks = sum(1 for o in range(0, len(data), 65536) if any(data[o:o + 65536]))
    assert j["required"] == 2 * 65536 + blocks * 65536
    assert img("measure", "-O", "example").rc == 1


@pytest.mark.formats("raw", "qcow2")
def test_measure_qcow2_close_to_qemu(tmp_path, img, qemu) -> None:
    src = str(tmp_path / "m.raw")
    write_mixed(src, 4 * MiB)
    ours = img("measure", "-f", "raw", "-O", "qcow2", "--output", "json", src)
    assert ours.rc == 0, ours.err
    theirs = json.loads(qemu("img", "measure", "-f", "raw", "-O", "qcow2", "--output", "json",
                             src).stdout)
    assert ours.json()["required"] == theirs["required"]
    assert ours.json()["fully-allocated"] == theirs["fully-allocated"]


@pytest.mark.formats("example")
def test_snapshot_list_empty(tmp_path, img) -> None:
    path = _ex(str(tmp_path / "s.ex"))
    r = img("snapshot", "-l", path)
    assert (r.rc, r.out) == (0, "")
    r = img("snapshot", path)      # no action: qemu-img opens it and does nothing
    assert (r.rc, r.out, r.err) == (0, "", "")
    r = img("snapshot", "-c", "one", path)
    assert r.rc == 1 and "Could not create snapshot 'one': -95 (Operation not supported)" in r.err


@pytest.mark.formats("qcow2")
def test_snapshot_list_like_qemu(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "s.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "1M")
    qemu("img", "snapshot", "-c", "first", path)
    ours = img("snapshot", "-l", path)
    theirs = qemu("img", "snapshot", "-l", path).stdout
    assert "first" in theirs
    assert (ours.rc, ours.out) == (0, theirs)


@pytest.mark.formats("example")
def test_subprocess_end_to_end(tmp_path) -> None:
    """The installed command, as a user runs it."""
    path = str(tmp_path / "sub.ex")
    exe = [sys.executable, "-m", "vmforge.cli.main"]
    r = subprocess.run([*exe, "img", "create", "-f", "example", path, "1M"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*exe, "img", "info", "--output=json", path], capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == "example"
    r = subprocess.run([*exe, "img", "info", path + ".missing"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr


@pytest.mark.formats("qcow2")
def test_snapshot_create_apply_delete_with_qemu_as_judge(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "s.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "2M")
    qemu("io", "-c", "write -P 1 0 128k", path)
    with BlockBackend.open(path) as bb:
        before = bb.read(0, bb.size)
    r = img("snapshot", "-c", "first", path)
    assert r.rc == 0, r.err
    listed = qemu("img", "snapshot", "-l", path).stdout
    assert "first" in listed and qemu("img", "check", path).returncode == 0
    qemu("io", "-c", "write -P 2 64k 128k", path)
    assert img("snapshot", "-a", "first", path).rc == 0
    with BlockBackend.open(path) as bb:
        assert bb.read(0, bb.size) == before
    assert img("snapshot", "-d", "first", path).rc == 0
    assert qemu("img", "snapshot", "-l", path).stdout == ""
    assert qemu("img", "check", path).returncode == 0
    r = img("snapshot", "-a", "nonexistent", path)
    assert r.rc == 1 and "nonexistent" in r.err and "Traceback" not in r.err
