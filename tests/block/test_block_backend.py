"""BlockBackend: probing, backing chains (reads, copy-on-write, status), loops, depth."""

from __future__ import annotations

import os

import pytest

from vmforge.block import (
    BlockBackend,
    BlockError,
    BlockStatus,
    ReadOnlyError,
    driver_class,
    probe_format,
)
from vmforge.testing.images import MiB, write_mixed

pytestmark = pytest.mark.formats("raw", "example")


def _example(path: str, size: int = 4 * MiB, backing: str | None = None,
             backing_fmt: str | None = None, **opts: object) -> str:
    kw = dict(opts)
    if backing:
        kw.update(backing_file=backing, backing_fmt=backing_fmt)
    driver_class("example").create(path, size, **kw)
    return path


def test_probe_picks_the_best_score(tmp_path) -> None:
    ex = _example(str(tmp_path / "a.ex"))
    raw = str(tmp_path / "a.raw")
    write_mixed(raw, MiB)
    assert probe_format(ex) == "example"
    assert probe_format(ex, writable=True) == "example"
    assert probe_format(raw) == "raw"
    with BlockBackend.open(ex) as bb:
        assert bb.format == "example" and bb.size == 4 * MiB


def test_raw_is_never_guessed_for_writing(tmp_path) -> None:
    raw = str(tmp_path / "a.raw")
    write_mixed(raw, MiB)
    with pytest.raises(BlockError, match=r"-f raw"):
        BlockBackend.open(raw, readonly=False)
    with BlockBackend.open(raw, "raw", readonly=False) as bb:
        bb.write(0, b"ok")


def test_missing_and_directory(tmp_path) -> None:
    with pytest.raises(BlockError, match="No such file"):
        BlockBackend.open(str(tmp_path / "nope"))
    with pytest.raises(BlockError, match="directory"):
        BlockBackend.open(str(tmp_path))


def test_chain_reads_relative_backing_and_zeros_past_its_end(tmp_path, monkeypatch) -> None:
    base = str(tmp_path / "base.raw")
    data = write_mixed(base, 2 * MiB)
    top = _example(str(tmp_path / "top.ex"), 3 * MiB, "base.raw", "raw")
    monkeypatch.chdir("/")  # the relative name resolves against the image's directory
    with BlockBackend.open(top) as bb:
        assert [la.format for la in bb.layers] == ["example", "raw"]
        assert bb.read(0, 2 * MiB) == data
        assert bb.read(2 * MiB, MiB) == bytes(MiB)
        assert bb.read(2 * MiB - 10, 20) == data[-10:] + bytes(10)
        ext = list(bb.block_status())
        assert {e.depth for e in ext} == {0, 1}
        assert ext[-1].offset == 2 * MiB and ext[-1].depth == 0
        assert ext[-1].status == BlockStatus.ZERO


def test_copy_on_write_keeps_the_neighbours(tmp_path) -> None:
    base = str(tmp_path / "base.raw")
    data = bytearray(write_mixed(base, 2 * MiB))
    top = _example(str(tmp_path / "top.ex"), 2 * MiB, "base.raw", "raw")
    with BlockBackend.open(top, readonly=False) as bb:
        bb.write(70000, b"hello")
        data[70000:70005] = b"hello"
        bb.write_zeroes(200001, 70000)
        data[200001:270001] = bytes(70000)
        bb.pwritev(MiB - 1, [memoryview(b"ab"), memoryview(b"cd")])
        data[MiB - 1:MiB + 3] = b"abcd"
        assert bb.read(0, bb.size) == data
    with BlockBackend.open(top) as bb:
        assert bb.read(0, bb.size) == data
        depth0 = [e for e in bb.block_status() if e.depth == 0]
        assert sum(e.length for e in depth0) <= 6 * 65536  # only the touched blocks
    with open(base, "rb") as f:  # the base is unchanged
        assert f.read() != bytes(data)


def test_readonly_backend_refuses_writes(tmp_path) -> None:
    top = _example(str(tmp_path / "t.ex"))
    with BlockBackend.open(top) as bb, pytest.raises(ReadOnlyError):
        bb.write(0, b"x")


def test_backing_format_is_probed_when_not_recorded(tmp_path) -> None:
    base = _example(str(tmp_path / "base.ex"), MiB)
    with BlockBackend.open(base, readonly=False) as bb:
        bb.write(5, b"base")
    top = _example(str(tmp_path / "top.ex"), MiB, "base.ex", None)
    with BlockBackend.open(top) as bb:
        assert bb.layers[1].format == "example"
        assert bb.read(5, 4) == b"base"


def test_missing_backing_file_is_named(tmp_path) -> None:
    top = _example(str(tmp_path / "top.ex"), MiB, "gone.raw", "raw")
    with pytest.raises(BlockError, match=r"gone\.raw"):
        BlockBackend.open(top)
    with BlockBackend.open(top, backing=False) as bb:  # the image itself still opens
        assert bb.top.backing_filename == "gone.raw"


def test_backing_loop_is_refused(tmp_path) -> None:
    a = _example(str(tmp_path / "a.ex"), MiB, "b.ex", "example")
    _example(str(tmp_path / "b.ex"), MiB, "a.ex", "example")
    with pytest.raises(BlockError, match="loop"):
        BlockBackend.open(a)
    self_loop = _example(str(tmp_path / "s.ex"), MiB, "s.ex", "example")
    with pytest.raises(BlockError, match="loop"):
        BlockBackend.open(self_loop)


def test_chain_depth_limit(tmp_path) -> None:
    _example(str(tmp_path / "l0.ex"), MiB)
    for i in range(1, 6):
        _example(str(tmp_path / f"l{i}.ex"), MiB, f"l{i - 1}.ex", "example")
    top = str(tmp_path / "l5.ex")
    with BlockBackend.open(top) as bb:
        assert len(bb.layers) == 6
    with pytest.raises(BlockError, match="longer than 3"):
        BlockBackend.open(top, max_depth=3)


def test_deep_chain_reads_each_layer(tmp_path) -> None:
    _example(str(tmp_path / "l0.ex"), MiB)
    for i in range(1, 4):
        _example(str(tmp_path / f"l{i}.ex"), MiB, f"l{i - 1}.ex", "example")
    for i in range(4):  # layer i writes block i
        with BlockBackend.open(str(tmp_path / f"l{i}.ex"), readonly=False, backing=False) as bb:
            bb.write(i * 65536, bytes([i + 1]) * 10)
    with BlockBackend.open(str(tmp_path / "l3.ex")) as bb:
        for i in range(4):
            assert bb.read(i * 65536, 10) == bytes([i + 1]) * 10
        depths = [e.depth for e in bb.block_status(0, 4 * 65536)]
        assert depths == [3, 2, 1, 0]


def test_chain_agrees_with_qemu_img(tmp_path, qemu) -> None:
    """A raw base with an example overlay reads what qemu-img reads from a qcow2 overlay
    with the same writes."""
    base = str(tmp_path / "base.raw")
    write_mixed(base, 2 * MiB)
    qcow = str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", qcow, "3M")
    ex = _example(str(tmp_path / "top.ex"), 3 * MiB, "base.raw", "raw")
    with BlockBackend.open(ex, readonly=False) as bb:
        bb.write(12345, b"x" * 1000)
        view = bb.read(0, bb.size)
    qemu("io", "-f", "qcow2", "-c", "write -P 0x78 12345 1000", qcow)
    flat = str(tmp_path / "flat.raw")
    qemu("img", "convert", "-O", "raw", qcow, flat)
    with open(flat, "rb") as f:
        assert f.read() == view
    assert os.path.getsize(flat) == 3 * MiB


@pytest.mark.formats("raw", "qcow2")
def test_qcow2_overlay_written_by_vmforge_equals_qemus(tmp_path, qemu) -> None:
    """Copy-on-write through a qcow2 overlay: qemu-img checks and compares it with the
    overlay qemu-io wrote the same way."""
    base = str(tmp_path / "base.raw")
    write_mixed(base, 2 * MiB)
    ours, theirs = str(tmp_path / "ours.qcow2"), str(tmp_path / "theirs.qcow2")
    for path in (ours, theirs):
        qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", path)
    writes = [(1000, 0x41, 3000), (65536 * 3 + 17, 0x42, 70000), (2 * MiB - 9, 0x43, 9)]
    with BlockBackend.open(ours, readonly=False) as bb:
        for off, byte, n in writes:
            bb.write(off, bytes([byte]) * n)
        bb.write_zeroes(MiB + 100, 65536)
    qemu("io", "-f", "qcow2", *[a for off, byte, n in writes
                               for a in ("-c", f"write -P {byte} {off} {n}")],
         "-c", f"write -z {MiB + 100} 65536", theirs)
    assert qemu("img", "check", ours).returncode == 0
    assert qemu("img", "compare", ours, theirs).returncode == 0


def test_concurrent_partial_writes_over_a_backing_file(tmp_path) -> None:
    """Two I/O threads writing different bytes of the same unallocated units lose nothing."""
    import threading

    base = str(tmp_path / "base.raw")
    data = bytearray(write_mixed(base, MiB))
    top = _example(str(tmp_path / "top.ex"), MiB, "base.raw", "raw")
    stripes = [(off, bytes([1 + (off // 1024) % 250]) * 1000) for off in range(0, MiB, 1024)]
    for off, chunk in stripes:
        data[off:off + len(chunk)] = chunk
    with BlockBackend.open(top, readonly=False) as bb:
        def work(part: list[tuple[int, bytes]]) -> None:
            for off, chunk in part:
                bb.write(off, chunk)

        threads = [threading.Thread(target=work, args=(stripes[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bb.read(0, MiB) == data


def test_public_names_are_exported() -> None:
    import vmforge.block as block

    for name in block.__all__:
        assert getattr(block, name) is not None, name
    assert {"BlockBackend", "probe_format", "LockedError", "CACHE_MODES"} <= set(block.__all__)


def test_read_only_error_keeps_its_message() -> None:
    """It is also a PermissionError, whose str() would hide the message."""
    err = ReadOnlyError("image opened read-only", "disk.qcow2")
    assert str(err) == "disk.qcow2: image opened read-only"
    assert isinstance(err, PermissionError) and err.filename == "disk.qcow2"


def test_guessed_raw_opens_writable_but_guards_block_0(tmp_path, caplog) -> None:
    """QEMU's ``-hda disk.img``: a raw guess opens with a warning; a write that would
    make block 0 look like another format (a qcow2 header) is refused."""
    import logging

    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))
    with pytest.raises(BlockError, match="probing guessed raw"):
        BlockBackend.open(str(path), readonly=False)              # the default: refused
    caplog.set_level(logging.WARNING)
    with BlockBackend.open(str(path), readonly=False, guessed_raw=True) as bb:
        assert bb.format == "raw" and "probing guessed raw" in caplog.text
        bb.write(0, b"\xeb\x3c\x90MSDOS5.0")                   # a boot sector: still raw
        bb.write(4096, b"QFI\xfb\x00\x00\x00\x03")              # not block 0: anything goes
        with pytest.raises(BlockError, match="block 0 refused"):
            bb.write(0, b"QFI\xfb\x00\x00\x00\x03" + bytes(504))   # a qcow2 header
        assert bb.read(0, 3) == b"\xeb\x3c\x90"
    with BlockBackend.open(str(path), "raw", readonly=False) as bb:   # format given
        bb.write(0, b"QFI\xfb\x00\x00\x00\x03")                      # the user's choice
