"""``vmforge img bitmap`` against ``qemu-img bitmap`` 7.2: the same bitmaps in
``qemu-img info``, images ``qemu-img check`` accepts, the same bits after merges
(read back by vmforge's reader from both images), the same refusals; and a write
through vmforge never leaves a bitmap silently wrong."""

from __future__ import annotations

import json
import shutil

import pytest

MiB = 1 << 20


def _spec(qemu, path: str) -> dict:
    out = json.loads(qemu("img", "info", "--output", "json", path).stdout)
    return out["format-specific"]["data"]


def _clean(qemu, path: str) -> None:
    r = qemu("img", "check", "--output", "json", path, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def pair(tmp_path, qemu):
    a, b = str(tmp_path / "qemu.qcow2"), str(tmp_path / "vmforge.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", a, "64M")
    shutil.copy(a, b)
    return a, b


@pytest.mark.formats("qcow2")
def test_bitmap_operations_like_qemu_img(pair, img, qemu) -> None:
    a, b = pair
    steps = [
        ("--add", "b0"), ("--add -g 128k --disable", "b1"), ("--add -g 4k", "b2"),
        ("--enable", "b1"), ("--disable --clear", "b0"), ("--merge b0 --enable", "b1"),
        ("--remove", "b2"),
    ]
    for flags, name in steps:
        qemu("img", "bitmap", *flags.split(), a, name)
        r = img("bitmap", *flags.split(), b, name)
        assert r.rc == 0, r.err
        assert _spec(qemu, b) == _spec(qemu, a), (flags, name)
        _clean(qemu, b)
    # vmforge's info shows them as qemu-img's, in JSON and in words (the flags list:
    # "[0]: auto", QEMU's dump_qlist)
    assert img("info", "--output", "json", b).json()["format-specific"]["data"] == \
        _spec(qemu, a)
    human = img("info", b).out
    assert "[0]: auto" in human
    assert human.split("Format specific information:")[1] == \
        qemu("img", "info", a).stdout.split("Format specific information:")[1]
    for flags, name in [("--remove", "b0"), ("--remove", "b1")]:
        qemu("img", "bitmap", *flags.split(), a, name)
        assert img("bitmap", *flags.split(), b, name).rc == 0
    assert "bitmaps" not in _spec(qemu, b)
    _clean(qemu, b)


@pytest.mark.formats("qcow2")
@pytest.mark.parametrize("argv,message", [
    ([], "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge"),
    (["--add", "-g", "1000"], "Operation add on bitmap bm failed: Granularity must be "
     "power of 2 and at least 512"),
    (["--remove"], "Operation remove on bitmap bm failed: Dirty bitmap 'bm' not found"),
    (["--clear", "-g", "64k"], "granularity only supported with --add"),
])
def test_bitmap_refusals_like_qemu_img(pair, img, qemu, argv, message) -> None:
    a, b = pair
    theirs = qemu("img", "bitmap", *argv, a, "bm", check=False)
    assert theirs.returncode == 1 and message in theirs.stderr
    r = img("bitmap", *argv, b, "bm")
    assert r.rc == 1 and message in r.err and r.err.count("\n") == 1


@pytest.mark.formats("qcow2")
def test_bitmap_exists_twice_and_raw(tmp_path, pair, img, qemu) -> None:
    _, b = pair
    assert img("bitmap", "--add", b, "x").rc == 0
    r = img("bitmap", "--add", b, "x")
    assert r.rc == 1 and "Operation add on bitmap x failed: Bitmap already exists: x" in r.err
    raw = str(tmp_path / "r.raw")
    qemu("img", "create", "-q", "-f", "raw", raw, "1M")
    r = img("bitmap", "--add", "-f", "raw", raw, "x")
    assert r.rc == 1 and "Operation add on bitmap x failed: Can't store persistent " \
        "bitmaps to" in r.err


@pytest.mark.formats("qcow2")
@pytest.mark.parametrize("dst_granularity", ["64k", "512k", "16k"])
def test_merged_bits_like_qemu_img(tmp_path, pair, img, qemu, dst_granularity) -> None:
    """A bitmap with dirty bits (written by vmforge) merged by qemu-img and by vmforge,
    from another image (-b/-F) into bitmaps of other granularities: the same bits."""
    from vmforge_qcow2 import Qcow2

    a, b = pair
    src = str(tmp_path / "src.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", src, "64M")
    with Qcow2.open(src, readonly=False) as q:
        q.add_bitmap("s", 65536)
        bits = bytearray(64 * MiB // 65536 // 8)
        for i in (0, 1, 7, 100, 511, 1023):
            bits[i // 8] |= 1 << (i % 8)
        q.merge_bitmap("s", bytes(bits), 65536)
    _clean(qemu, src)
    for path, tool in ((a, qemu), (b, None)):
        args = ["bitmap", "--add", "-g", dst_granularity, path, "d"]
        (tool("img", *args) if tool else img(*args))
        args = ["bitmap", "--merge", "s", "-b", src, "-F", "qcow2", path, "d"]
        r = tool("img", *args) if tool else img(*args)
        assert (r.returncode if tool else r.rc) == 0
        _clean(qemu, path)
    with Qcow2.open(a) as qa, Qcow2.open(b) as qb:
        theirs, g_a = qa.bitmap_bits("d")
        ours, g_b = qb.bitmap_bits("d")
    assert g_a == g_b and ours == theirs and any(theirs)


@pytest.mark.formats("qcow2")
def test_writes_through_vmforge_never_leave_a_bitmap_wrong(pair, img, qemu) -> None:
    """vmforge does not track writes in bitmaps: it clears the autoclear bit before the
    first write (the spec's rule), so QEMU drops the bitmaps instead of trusting stale
    ones; no corruption, and the leaked bitmap clusters are repairable."""
    from vmforge_qcow2 import Qcow2

    a, _ = pair
    qemu("img", "bitmap", "--add", a, "b0")
    with Qcow2.open(a, readonly=False) as q:        # a writable open alone keeps them
        pass
    assert [bm["name"] for bm in _spec(qemu, a)["bitmaps"]] == ["b0"]
    with Qcow2.open(a, readonly=False) as q:
        q.write(MiB, b"\x01" * 65536)
    assert "bitmaps" not in _spec(qemu, a)
    r = json.loads(qemu("img", "check", "--output", "json", a, check=False).stdout)
    assert r.get("corruptions", 0) == 0
    qemu("img", "check", "-r", "leaks", a)
    _clean(qemu, a)


@pytest.mark.formats("qcow2")
def test_reader_sees_the_bits_qemu_stored(pair, img, qemu) -> None:
    """qemu-io dirties an enabled bitmap; vmforge reads the bits QEMU stored, and a
    merge by vmforge of that bitmap equals qemu-img's."""
    from vmforge_qcow2 import Qcow2

    a, b = pair
    for path in (a, b):
        qemu("img", "bitmap", "--add", "-g", "64k", path, "b0")
        qemu("io", "-c", "write 1M 1M", "-c", "write 40M 4k", path)
        qemu("img", "bitmap", "--add", "-g", "1M", "--disable", path, "d")
    qemu("img", "bitmap", "--merge", "b0", a, "d")
    assert img("bitmap", "--merge", "b0", b, "d").rc == 0
    _clean(qemu, b)
    with Qcow2.open(a) as qa, Qcow2.open(b) as qb:
        bits, g = qb.bitmap_bits("b0")
        set_bits = [i for i in range(len(bits) * 8) if bits[i // 8] >> (i % 8) & 1]
        assert g == 65536 and set_bits == [*range(16, 32), 640]
        assert qb.bitmap_bits("d") == qa.bitmap_bits("d")
