"""``vmforge img convert``: the output equals qemu-img's, stays sparse, passes qemu-img check."""

from __future__ import annotations

import io
import itertools
import os

import pytest

from vmforge._fast.zeroscan import zero_runs
from vmforge.block import BlockBackend, driver_class
from vmforge.cli.img import ProgressBar
from vmforge.testing.images import MiB, write_mixed

SIZE = 4 * MiB


@pytest.fixture
def mixed(tmp_path) -> tuple[str, bytes]:
    path = str(tmp_path / "mixed.raw")
    return path, write_mixed(path, SIZE)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def test_zero_runs_split_on_aligned_pieces() -> None:
    buf = bytearray(10000)
    buf[5000] = 1
    runs = zero_runs(memoryview(buf), 100, 4096)
    # pieces: [100,4096) partial -> data; [4096,8192) has the 1 -> data; [8192,10100) partial
    assert runs == [(0, 10000, False)]
    assert zero_runs(memoryview(bytes(20000)), 0, 4096) == [(0, 16384, True),
                                                              (16384, 20000, False)]
    assert zero_runs(b"", 0, 4096) == []
    with pytest.raises(ValueError):
        zero_runs(b"x", 0, 0)


def test_zero_runs_against_a_plain_scan() -> None:
    """Random buffers with zero blocks, nonzero bytes at every position of a word,
    odd offsets and lengths: the C scan agrees with the obvious one."""
    import random

    rng = random.Random(5)
    for _ in range(300):
        step = rng.choice([512, 4096])
        n = rng.randrange(0, 5 * step)
        buf = bytearray(n)
        for _ in range(rng.randrange(4)):
            if n:
                buf[rng.randrange(n)] = rng.randrange(1, 256)
        offset = rng.randrange(3 * step)
        want: list[tuple[int, int, bool]] = []
        pos = 0
        while pos < n:
            nxt = min(n, (offset + pos) // step * step + step - offset)
            z = nxt - pos == step and not any(buf[pos:nxt])
            if want and want[-1][2] == z:
                want[-1] = (want[-1][0], nxt, z)
            else:
                want.append((pos, nxt, z))
            pos = nxt
        assert zero_runs(memoryview(buf), offset, step) == want, (n, offset, step)


@pytest.mark.formats("raw")
def test_raw_to_raw_is_identical_and_as_sparse_as_qemu(tmp_path, mixed, img, qemu) -> None:
    src, data = mixed
    ours, theirs = str(tmp_path / "ours.raw"), str(tmp_path / "theirs.raw")
    r = img("convert", "-f", "raw", "-O", "raw", src, ours)
    assert r.rc == 0, r.err
    qemu("img", "convert", "-f", "raw", "-O", "raw", src, theirs)
    assert _read(ours) == _read(theirs) == data
    assert _allocated(ours) <= _allocated(theirs) + 65536


@pytest.mark.formats("raw", "qcow2")
@pytest.mark.parametrize("compress", [False, True])
def test_raw_to_qcow2_passes_qemu_check_and_compare(tmp_path, mixed, img, qemu,
                                                    compress: bool) -> None:
    src, _ = mixed
    dst = str(tmp_path / "out.qcow2")
    r = img("convert", "-f", "raw", "-O", "qcow2", *(["-c"] if compress else []), src, dst)
    assert r.rc == 0, r.err
    assert qemu("img", "check", dst).returncode == 0
    assert qemu("img", "compare", "-f", "raw", "-F", "qcow2", src, dst).returncode == 0
    theirs = str(tmp_path / "theirs.qcow2")
    qemu("img", "convert", "-f", "raw", "-O", "qcow2", *(["-c"] if compress else []), src,
         theirs)
    if compress:  # compressed clusters: the file is much smaller than the data
        assert os.path.getsize(dst) < os.path.getsize(theirs) * 1.3
    else:
        assert abs(os.path.getsize(dst) - os.path.getsize(theirs)) <= 4 * 65536


@pytest.mark.formats("raw", "qcow2")
def test_qcow2_chain_to_raw_equals_qemu(tmp_path, mixed, img, qemu) -> None:
    src, _ = mixed
    top = str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(src), "-F", "raw", top,
         "5M")
    qemu("io", "-f", "qcow2", "-c", "write -P 0xab 100000 300000", "-c",
         "write -z 2M 128k", top)
    ours, theirs = str(tmp_path / "ours.raw"), str(tmp_path / "theirs.raw")
    assert img("convert", "-O", "raw", top, ours).rc == 0
    qemu("img", "convert", "-O", "raw", top, theirs)
    assert _read(ours) == _read(theirs)
    assert _allocated(ours) <= _allocated(theirs) + 65536


@pytest.mark.formats("raw", "example")
def test_example_roundtrip_and_sparse(tmp_path, mixed, img) -> None:
    src, data = mixed
    ex, back = str(tmp_path / "m.ex"), str(tmp_path / "back.raw")
    assert img("convert", "-f", "raw", "-O", "example", "-o", "block_size=4096", src, ex).rc == 0
    with BlockBackend.open(ex) as bb:
        assert bb.read(0, SIZE) == data
        data_bytes = sum(e.length for e in bb.block_status() if e.is_data)
    assert data_bytes == sum(65536 for o in range(0, SIZE, 65536) if any(data[o:o + 65536]))
    assert img("convert", "-O", "raw", ex, back).rc == 0
    assert _read(back) == data


@pytest.mark.formats("raw")
def test_sparse_size_zero_allocates_everything(tmp_path, mixed, img) -> None:
    src, data = mixed
    full = str(tmp_path / "full.raw")
    assert img("convert", "-f", "raw", "-O", "raw", "-S", "0", src, full).rc == 0
    assert _read(full) == data
    assert _allocated(full) >= SIZE
    r = img("convert", "-f", "raw", "-O", "raw", "-S", "1000", src, full)
    assert r.rc == 1 and "512" in r.err


@pytest.mark.formats("raw")
def test_existing_target_with_n(tmp_path, mixed, img) -> None:
    src, data = mixed
    dst = str(tmp_path / "dst.raw")
    with open(dst, "wb") as f:
        f.write(b"\xff" * SIZE)
    assert img("convert", "-n", "-f", "raw", "-O", "raw", src, dst).rc == 0
    assert _read(dst) == data  # zeros were written where the source reads zeros
    with open(dst, "wb") as f:
        f.truncate(SIZE)
    assert img("convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw", src, dst).rc == 0
    assert _read(dst) == data
    r = img("convert", "--target-is-zero", "-f", "raw", "-O", "raw", src, dst)
    assert r.rc == 1 and "-n" in r.err


@pytest.mark.formats("raw", "example")
def test_several_sources_are_concatenated(tmp_path, img) -> None:
    a, b = str(tmp_path / "a.raw"), str(tmp_path / "b.raw")
    da, db = write_mixed(a, MiB, seed=1), write_mixed(b, 2 * MiB + 512, seed=2)
    dst = str(tmp_path / "ab.ex")
    assert img("convert", "-f", "raw", "-O", "example", a, b, dst).rc == 0
    with BlockBackend.open(dst) as bb:
        assert bb.size == 3 * MiB + 512
        assert bb.read(0, bb.size) == da + db


@pytest.mark.formats("raw")
def test_refuses_converting_onto_the_source(mixed, img) -> None:
    src, data = mixed
    r = img("convert", "-f", "raw", "-O", "raw", src, src)
    assert r.rc == 1 and "same file" in r.err
    assert _read(src) == data


@pytest.mark.formats("raw", "example")
def test_compress_needs_a_format_that_can(tmp_path, mixed, img) -> None:
    src, _ = mixed
    r = img("convert", "-c", "-f", "raw", "-O", "example", src, str(tmp_path / "x.ex"))
    assert r.rc == 1 and "Compression not supported" in r.err


@pytest.mark.formats("raw")
def test_progress_bar_like_qemu_img(tmp_path, mixed, capsys) -> None:
    from vmforge.cli.main import build_parser

    src, data = mixed
    dst = str(tmp_path / "p.raw")
    # through the parser directly: see the report on main()'s pre-parsing of -p
    args = build_parser().parse_args(["img", "convert", "-p", "-f", "raw", "-O", "raw", src,
                                      dst])
    assert args.func(args) == 0
    out = capsys.readouterr().out      # qemu-img prints its progress on stdout
    assert out.startswith("    (0.00/100%)\r") and out.endswith("    (100.00/100%)\r\n")
    assert _read(dst) == data
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for i in range(0, 1001):
        bar(i, 1000)
    shown = [float(s.strip()[1:].split("/")[0]) for s in stream.getvalue().split("\r")[:-1]]
    assert shown[0] == 0.0 and shown[-1] == 100.0     # qemu-progress.c: steps above 1%
    steps = [b - a for a, b in itertools.pairwise(shown[:-1])]   # shown to 2 decimals
    assert min(steps) > 0.99 and max(steps) < 1.2


@pytest.mark.formats("raw", "qcow2")
def test_compressed_convert_runs_on_two_threads(tmp_path, mixed, monkeypatch) -> None:
    """``-c`` calls write_compressed from a pool of two threads."""
    import threading

    from vmforge.block import ops

    src, data = mixed
    dst = str(tmp_path / "c.qcow2")
    cls = driver_class("qcow2")
    cls.create(dst, SIZE)
    seen: set[str] = set()
    real = cls.write_compressed

    def spy(self, offset, chunk):  # type: ignore[no-untyped-def]
        seen.add(threading.current_thread().name)
        return real(self, offset, chunk)

    monkeypatch.setattr(cls, "write_compressed", spy)
    with BlockBackend.open(src, "raw") as s, BlockBackend.open(dst, "qcow2",
                                                                readonly=False) as t:
        ops.convert([s], t, compress=True, workers=2)
    assert len(seen) == 2 and all(n.startswith("convert-c") for n in seen)
    with BlockBackend.open(dst) as bb:
        assert bb.read(0, SIZE) == data


@pytest.mark.formats("raw", "example")
def test_cache_mode_unsafe_by_default_like_qemu_img(tmp_path, mixed, img, monkeypatch) -> None:
    src, data = mixed
    syncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real(fd))[1])
    assert img("convert", "-f", "raw", "-O", "example", src, str(tmp_path / "u.ex")).rc == 0
    assert syncs == []  # qemu-img convert never syncs its target either (cache=unsafe)
    assert img("convert", "-t", "writeback", "-f", "raw", "-O", "example", src,
               str(tmp_path / "w.ex")).rc == 0
    assert syncs
    with BlockBackend.open(str(tmp_path / "u.ex")) as bb:
        assert bb.read(0, SIZE) == data


@pytest.mark.formats("raw")
def test_write_errors_name_the_target(tmp_path, mixed, img, monkeypatch) -> None:
    import errno

    src, _ = mixed
    raw = driver_class("raw")

    def full(self, offset, buffers):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(raw, "pwritev", full)
    monkeypatch.setattr(raw, "pwritev_runs", lambda self, runs: full(self, 0, []))
    dst = str(tmp_path / "full.raw")
    r = img("convert", "-f", "raw", "-O", "raw", src, dst)
    assert r.rc == 1 and dst in r.err and "No space left on device" in r.err
    assert "offset" in r.err and "Traceback" not in r.err
    import threading

    assert not [t for t in threading.enumerate() if t.name == "convert-w"], \
        "the writer thread outlives a failed conversion"


@pytest.mark.formats("raw")
def test_progress_flag_through_main(tmp_path, mixed, img) -> None:
    src, data = mixed
    dst = str(tmp_path / "m.raw")
    r = img("convert", "-p", "-f", "raw", "-O", "raw", src, dst)
    assert r.rc == 0 and "(100.00/100%)" in r.out
    assert _read(dst) == data


@pytest.mark.formats("raw", "qcow2", "example")
@pytest.mark.parametrize("out", ["qcow2", "example"])
def test_convert_with_backing_copies_only_the_top(tmp_path, img, qemu, monkeypatch,
                                                  out: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_mixed("base.raw", 2 * MiB)
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "top.qcow2")
    qemu("io", "-c", "write -P 7 64k 128k", "-c", "write -z 1M 64k", "top.qcow2")
    r = img("convert", "-O", out, "-B", "base.raw", "-F", "raw", "top.qcow2", f"out.{out}")
    assert r.rc == 0, r.err
    with BlockBackend.open("top.qcow2") as a, BlockBackend.open(f"out.{out}") as b:
        assert a.read(0, a.size) == b.read(0, b.size)
        ours = {(e.offset, e.length) for e in b.block_status() if e.depth == 0}
        assert ours == {(65536, 131072), (MiB, 65536)}  # the top's data and its zeros
    if out == "qcow2":
        assert qemu("img", "check", "out.qcow2").returncode == 0
        assert qemu("img", "compare", "top.qcow2", "out.qcow2").returncode == 0
    r = img("convert", "-O", out, "-B", "base.raw", "top.qcow2", "x")
    assert r.rc == 1 and "explicit backing format" in r.err
    r = img("convert", "-O", "raw", "-B", "base.raw", "-F", "raw", "top.qcow2", "x")
    assert r.rc == 1 and "Backing file not supported" in r.err
