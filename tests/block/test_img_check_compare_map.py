"""``vmforge img check``, ``compare`` and ``map``: exit codes and output as qemu-img's."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct

import pytest

from vmforge.block import BlockBackend, CheckResult, driver_class
from vmforge.testing.images import MiB, mixed_bytes, write_mixed


def _example_with_data(path: str) -> None:
    driver_class("example").create(path, MiB)
    with BlockBackend.open(path, readonly=False) as bb:
        bb.write(70000, b"data" * 100)


@pytest.mark.formats("example")
def test_check_clean_json_and_corrupt_table(tmp_path, img) -> None:
    path = str(tmp_path / "c.ex")
    _example_with_data(path)
    r = img("check", path)
    assert r.rc == 0 and "No errors were found on the image." in r.out
    j = img("check", "--output", "json", path)
    assert j.rc == 0 and j.json()["check-errors"] == 0 and j.json()["format"] == "example"
    # point entry 1 of the block table past the end of the file
    with open(path, "r+b") as f:
        f.seek(65536 + 8)
        f.write(struct.pack("<Q", 1 << 40))
    r = img("check", path)
    assert r.rc == 2
    assert "1 errors were found on the image." in r.out
    assert "block table" in r.err and "0x10008" in r.err
    assert img("check", "--output", "json", path).json()["corruptions"] == 1
    r = img("info", "--output", "json", path)  # the header is fine: info works
    assert r.rc == 0
    r = img("convert", "-O", "raw", path, str(tmp_path / "out.raw"))
    assert r.rc == 1 and "corrupt image in block table at offset 0x10008" in r.err
    assert "Traceback" not in r.err


@pytest.mark.formats("raw")
def test_check_of_a_format_without_checks_exits_63(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "r.raw")
    write_mixed(path, MiB)
    r = img("check", "-f", "raw", path)
    assert r.rc == 63 == qemu("img", "check", "-f", "raw", path, check=False).returncode
    assert "does not support checks" in r.err


@pytest.mark.formats("example")
def test_check_exit_code_for_leaks(tmp_path, img, monkeypatch) -> None:
    path = str(tmp_path / "l.ex")
    _example_with_data(path)
    cls = driver_class("example")

    def leaky(self, repair=None):  # type: ignore[no-untyped-def]
        return CheckResult(self.filename, "example", leaks=3, image_end_offset=1)

    monkeypatch.setattr(cls, "check", leaky)
    r = img("check", path)
    assert r.rc == 3 and "3 leaked clusters were found on the image." in r.out


@pytest.mark.formats("qcow2")
def test_check_qcow2_made_by_qemu(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "q.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "8M")
    qemu("io", "-c", "write -P 1 0 1M", "-c", "write -c -P 2 2M 64k", path)
    ours = img("check", "--output", "json", path)
    theirs = json.loads(qemu("img", "check", "--output", "json", path).stdout)
    assert ours.rc == 0
    for key in ("check-errors", "filename", "format", "image-end-offset"):
        assert ours.json().get(key) == theirs.get(key), key
    if "total-clusters" in ours.json():  # the plugin reports cluster statistics
        assert ours.json() == theirs and list(ours.json()) == list(theirs)
        assert img("check", path).out == qemu("img", "check", path).stdout


@pytest.mark.formats("raw")
def test_compare_like_qemu_img(tmp_path, img, qemu) -> None:
    a, b, c = (str(tmp_path / n) for n in ("a.raw", "b.raw", "c.raw"))
    write_mixed(a, 2 * MiB)
    write_mixed(b, 2 * MiB)
    r = img("compare", "-f", "raw", "-F", "raw", a, b)
    assert (r.rc, r.out) == (0, "Images are identical.\n")
    with open(b, "r+b") as f:
        f.seek(MiB + 777)
        f.write(b"!")
    for args in (("-f", "raw", "-F", "raw", a, b), ("-f", "raw", "-F", "raw", b, a)):
        ours = img("compare", *args)
        theirs = qemu("img", "compare", *args, check=False)
        assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout) == (
            1, f"Content mismatch at offset {MiB + 512}!\n")
    write_mixed(c, 2 * MiB)
    with open(c, "r+b") as f:
        f.truncate(3 * MiB)
    for args in (("-f", "raw", "-F", "raw", a, c), ("-s", "-f", "raw", "-F", "raw", a, c)):
        ours = img("compare", *args)
        theirs = qemu("img", "compare", *args, check=False)
        assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout)
    with open(c, "r+b") as f:
        f.seek(3 * MiB - 1)
        f.write(b"x")
    ours = img("compare", "-f", "raw", "-F", "raw", a, c)
    theirs = qemu("img", "compare", "-f", "raw", "-F", "raw", a, c, check=False)
    assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout)
    r = img("compare", "-f", "raw", a, str(tmp_path / "missing"))
    assert r.rc == 2 and "missing" in r.err


@pytest.mark.formats("raw", "qcow2")
def test_compare_across_formats(tmp_path, img, qemu) -> None:
    a, q = str(tmp_path / "a.raw"), str(tmp_path / "a.qcow2")
    write_mixed(a, 2 * MiB)
    qemu("img", "convert", "-f", "raw", "-O", "qcow2", a, q)
    assert img("compare", "-f", "raw", "-F", "qcow2", a, q).rc == 0
    for args in (("-s", a, q), ("-s", q, a)):  # holes of raw vs unallocated clusters
        ours, theirs = img("compare", *args), qemu("img", "compare", *args, check=False)
        assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout)
    qemu("io", "-f", "qcow2", "-c", "write -P 9 1536k 1", q)
    r = img("compare", "-f", "raw", "-F", "qcow2", a, q)
    assert (r.rc, r.out) == (1, f"Content mismatch at offset {1536 * 1024}!\n")


@pytest.mark.formats("raw")
def test_map_json_agrees_with_qemu_img(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "m.raw")
    write_mixed(path, 3 * MiB)
    ours = img("map", "-f", "raw", "--output", "json", path)
    assert ours.rc == 0
    theirs = json.loads(qemu("img", "map", "-f", "raw", "--output", "json", path).stdout)
    assert json.loads(ours.out) == theirs
    human = img("map", "-f", "raw", path)
    assert human.out == qemu("img", "map", "-f", "raw", path).stdout


@pytest.mark.formats("raw", "qcow2")
def test_map_of_a_chain_agrees_with_qemu_img(tmp_path, img, qemu) -> None:
    base = str(tmp_path / "base.raw")
    write_mixed(base, 2 * MiB)
    top = str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "3M")
    qemu("io", "-c", "write -P 3 64k 64k", "-c", "write -z 1M 64k", top)
    ours = img("map", "--output", "json", top).json()
    theirs = json.loads(qemu("img", "map", "--output", "json", top).stdout)
    for entries in (ours, theirs):
        for e in entries:
            if not e["data"] or e["depth"] == 0:
                e.pop("offset", None)  # host offsets of qcow2 clusters are the driver's choice
    assert ours == theirs


@pytest.mark.formats("raw", "qcow2")
def test_map_of_a_qemu_made_chain_is_qemus(tmp_path, img, qemu) -> None:
    """Host offsets come from the image: on a qemu-made chain both maps are equal (the
    base is written whole: qemu-img also gives holes of a raw file an offset)."""
    (tmp_path / "base.raw").write_bytes(mixed_bytes(2 * MiB))
    top = str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "3M")
    qemu("io", "-c", "write -P 3 64k 64k", "-c", "write -z 1M 64k", top)
    assert img("map", "--output", "json", top).out == qemu("img", "map", "--output", "json",
                                                           top).stdout
    assert img("map", top).out == qemu("img", "map", top).stdout
    qemu("io", "-c", "write -c -P 5 2M 64k", top)
    ours, theirs = img("map", top), qemu("img", "map", top, check=False)
    assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout) and "compressed" in ours.err
    assert img("map", "--output", "json", top).out == qemu("img", "map", "--output", "json",
                                                           top).stdout


@pytest.mark.formats("qcow2")
@pytest.mark.parametrize("opts", ["extended_l2=off", "extended_l2=on"])
def test_map_shows_where_preallocated_zeros_and_subclusters_are(tmp_path, img, qemu,
                                                                opts) -> None:
    """Zeroed allocated clusters and unallocated subclusters of an allocated cluster
    have an offset in qemu-img's map (and separate entries where the offset jumps)."""
    path = str(tmp_path / "z.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-o", opts, path, "2M")
    qemu("io", "-c", "write -P 1 0 256k", "-c", "write -z 64k 64k", "-c", "write -z 132k 4k",
         "-c", "write -P 2 520k 2k", "-c", "write -P 3 1M 64k", path)
    theirs = qemu("img", "map", "--output", "json", path).stdout
    assert '"zero": true, "data": false, "offset"' in theirs
    assert img("map", "--output", "json", path).out == theirs
    assert img("map", path).out == qemu("img", "map", path).stdout


@pytest.mark.formats("example")
def test_map_human_lists_data_only(tmp_path, img) -> None:
    path = str(tmp_path / "h.ex")
    _example_with_data(path)
    lines = img("map", path).out.splitlines()
    assert lines[0] == "Offset          Length          Mapped to       File"
    assert lines[1:] == [f"0x10000         0x10000         0x20000         {path}"]
    assert os.path.exists(path)


def _leak_a_cluster(path: str) -> None:
    """Give cluster 6 (past the image's data) a refcount: a leak, as qemu-img sees it."""
    with open(path, "r+b") as f:
        f.seek(0x20000 + 2 * 6)  # the first refcount block of a fresh 64 KiB-cluster image
        f.write(struct.pack(">H", 1))
        f.truncate(0x70000)


@pytest.mark.formats("qcow2")
def test_check_leaks_and_repair_like_qemu(tmp_path, img, qemu) -> None:
    ours, theirs = str(tmp_path / "ours.qcow2"), str(tmp_path / "theirs.qcow2")
    for path in (ours, theirs):
        qemu("img", "create", "-q", "-f", "qcow2", path, "1M")
        qemu("io", "-c", "write -P 1 0 64k", path)
        _leak_a_cluster(path)
    r = img("check", ours)
    q = qemu("img", "check", theirs, check=False)
    assert (r.rc, r.out) == (q.returncode, q.stdout) == (3, q.stdout)
    r = img("check", "-r", "leaks", ours)
    q = qemu("img", "check", "-r", "leaks", theirs, check=False)
    assert (r.rc, r.out) == (q.returncode, q.stdout)
    assert "Double checking the fixed image now..." in r.out
    assert qemu("img", "check", ours).returncode == 0


@pytest.mark.formats("qcow2")
def test_check_repairs_an_image_marked_corrupt(tmp_path, img, qemu, caplog) -> None:
    """`check -r all` opens for repairs what a read-write open refuses (QEMU's BDRV_O_CHECK)."""
    path = str(tmp_path / "c.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "16M")
    qemu("io", "-f", "qcow2", "-c", "write -P 7 0 64k", path)
    with open(path, "r+b") as f:  # set the corrupt bit (incompatible feature bit 1)
        f.seek(72)
        bits = int.from_bytes(f.read(8), "big")
        f.seek(72)
        f.write((bits | 2).to_bytes(8, "big"))
    assert img("check", path).rc == 0  # a read-only check is allowed, with a warning
    assert "marked corrupt" in caplog.text
    assert '"corrupt": true' in qemu("img", "info", "--output", "json", path).stdout
    r = img("check", "-r", "all", path)
    assert r.rc == 0, r.err
    assert '"corrupt": false' in qemu("img", "info", "--output", "json", path).stdout
    assert qemu("io", "-f", "qcow2", "-c", "read -P 7 0 64k", path).returncode == 0


def _fragmented_qcow2(path: str, size: int, qemu) -> None:
    """512-byte clusters, every L1 entry on one shared L2 table whose entries alternate
    data and unallocated: a tiny file with one extent per cluster (2 per KiB)."""
    qemu("img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, str(size))
    with open(path, "r+b") as f:
        head = f.read(512)
        l1_size, l1_off = struct.unpack_from(">IQ", head, 36)
        end = f.seek(0, os.SEEK_END)
        l2 = -(-end // 512) * 512
        data = l2 + 512
        f.seek(l2)
        f.write(b"".join(struct.pack(">Q", data | 1 << 63 if i % 2 == 0 else 0)
                         for i in range(64)) + b"x" * 512)
        f.seek(l1_off)
        f.write(struct.pack(">Q", l2) * l1_size)


class _Sink(io.TextIOBase):
    """stdout that keeps a digest of what it is given, not the text."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, text: str) -> int:
        self.digest.update(text.encode())
        return len(text)


@pytest.mark.formats("qcow2")
def test_map_and_measure_stream_their_extents(tmp_path, qemu) -> None:
    """A fragmented image has millions of extents: map and measure hold a window of
    them, not the list (tracemalloc's peak stays far below what 32768 extents take),
    and print what qemu-img prints."""
    import tracemalloc

    from vmforge.cli.main import main

    small, frag = str(tmp_path / "small.qcow2"), str(tmp_path / "frag.qcow2")
    _fragmented_qcow2(small, MiB, qemu)
    _fragmented_qcow2(frag, 16 * MiB, qemu)
    for cmd in (["map", "--output", "json"], ["measure", "-O", "qcow2", "--output", "json"]):
        with contextlib.redirect_stdout(_Sink()):
            main(["img", *cmd, small])       # imports and caches: not what is measured
        sink = _Sink()
        tracemalloc.start()
        try:
            with contextlib.redirect_stdout(sink):
                rc = main(["img", *cmd, frag])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        theirs = qemu("img", *cmd, frag).stdout
        if cmd[0] == "measure":   # (qemu-img adds "bitmaps" for a qcow2 source)
            theirs = json.dumps({k: v for k, v in json.loads(theirs).items()
                                 if k != "bitmaps"}, indent=4) + "\n"
        assert rc == 0 and sink.digest.hexdigest() == hashlib.sha256(
            theirs.encode()).hexdigest(), (cmd, theirs[:300])
        assert peak < 3 * MiB, (cmd, peak)
