"""What block jobs attach to a BlockBackend: dirty bitmaps marked by every write
path, before-write notifiers, drain, serialised ranges, layers swapped in place."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vmforge.block import BlockBackend, create_image
from vmforge.block.bitmap import DirtyBitmap

pytestmark = pytest.mark.formats("qcow2", "raw")
MIB = 1 << 20


@pytest.fixture(params=["single", "chain"])
def bb(request: pytest.FixtureRequest, tmp_path: Path) -> BlockBackend:
    if request.param == "single":
        create_image("qcow2", str(tmp_path / "a.qcow2"), 4 * MIB)
    else:
        create_image("raw", str(tmp_path / "base.raw"), 4 * MIB)
        create_image("qcow2", str(tmp_path / "a.qcow2"), 4 * MIB,
                     backing_file=str(tmp_path / "base.raw"), backing_fmt="raw")
    b = BlockBackend.open(str(tmp_path / "a.qcow2"), "qcow2", readonly=False)
    request.addfinalizer(b.close)
    return b


def test_every_write_path_marks_the_bitmap(bb: BlockBackend) -> None:
    bm = DirtyBitmap(bb.size, 4096)
    bb.write(0, b"x")                       # before: not seen
    bb.add_dirty_bitmap(bm)
    bb.write(10 * 4096 + 5, b"abc")
    bb.pwritev(20 * 4096, [memoryview(b"y" * 8192)])
    bb.pwritev_runs([(30 * 4096, memoryview(b"z" * 10)), (40 * 4096, memoryview(b"w"))])
    bb.write_zeroes(50 * 4096, 4096 * 2)
    bb.discard(60 * 4096, 65536)
    bb.preadv(70 * 4096, [memoryview(bytearray(4096))])    # reads are not writes
    assert list(bm.dirty_runs()) == [(10 * 4096, 4096), (20 * 4096, 8192), (30 * 4096, 4096),
                                     (40 * 4096, 4096), (50 * 4096, 8192),
                                     (60 * 4096, 65536)]
    bm.clear_all()
    bb.truncate(5 * MIB)
    assert list(bm.dirty_runs()) == [(4 * MIB, MIB)]
    bb.remove_dirty_bitmap(bm)
    bb.write(0, b"q")
    assert list(bm.dirty_runs()) == [(4 * MIB, MIB)]
    assert bb._hooks is None          # nothing attached: the fast path again


def test_notifier_runs_before_the_data_lands(bb: BlockBackend) -> None:
    bb.write(4096, b"old!" * 1024)
    seen: list[tuple[int, int, bytes]] = []

    def before(offset: int, length: int) -> None:
        seen.append((offset, length, bb.read(offset, 4)))

    bb.add_write_notifier(before)
    bb.write(4096, b"new!" * 1024)
    bb.write_zeroes(4096, 512)
    bb.remove_write_notifier(before)
    bb.write(0, b"zz")
    assert seen == [(4096, 4096, b"old!"), (4096, 512, b"new!")]


def _started(target: object, *args: object) -> tuple[threading.Thread, threading.Event]:
    go = threading.Event()

    def run() -> None:
        go.set()
        target(*args)  # type: ignore[operator]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    go.wait()
    return t, go


def test_drained_holds_new_requests_and_lets_the_owner_through(bb: BlockBackend) -> None:
    bb.write(0, b"\0\0\0\0")
    with bb.drained():
        out: list[bool] = []
        t, _ = _started(lambda: out.append(bb.preadv_nowait(0, [memoryview(bytearray(4))])))
        t.join(10)
        assert out == [False]                # "no wait": declined, not blocked
        t, _ = _started(bb.write, 0, b"late")
        t.join(0.3)
        assert t.is_alive()                   # waiting for the drained section
        bb.write(8, b"mine")                  # the draining thread itself goes on
        assert bb.read(0, 4) == b"\0\0\0\0"
    t.join(10)
    assert not t.is_alive()
    assert bb.read(0, 12) == b"late\0\0\0\0mine"


@pytest.mark.parametrize("how", ["drain", "drained"])
def test_drain_waits_for_requests_in_flight(bb: BlockBackend, how: str) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(offset: int, length: int) -> None:
        entered.set()
        release.wait(10)

    bb.add_write_notifier(slow)
    writer, _ = _started(bb.write, 0, b"data")
    entered.wait(10)
    done = threading.Event()

    def drain() -> None:
        if how == "drain":
            bb.drain()
        else:
            with bb.drained():
                pass
        done.set()

    drainer, _ = _started(drain)
    drainer.join(0.3)
    assert not done.is_set()                  # the write is still in flight
    release.set()
    drainer.join(10)
    writer.join(10)
    assert done.is_set()
    bb.remove_write_notifier(slow)


def test_serialised_range_holds_overlapping_writes_only(bb: BlockBackend) -> None:
    with bb.serialising():
        with bb.serialised(0, 65536):
            far, _ = _started(bb.write, 2 * MIB, b"far")
            far.join(10)
            assert not far.is_alive()         # no overlap: not held
            near, _ = _started(bb.write, 4096, b"near")
            near.join(0.3)
            assert near.is_alive()
            assert bb.read(4096, 4) == b"\0\0\0\0"
        near.join(10)
        assert bb.read(4096, 4) == b"near"


def test_replace_and_reopen_layers_keep_the_object(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")
    create_image("qcow2", a, MIB)
    create_image("qcow2", b, MIB)
    bb = BlockBackend.open(a, "qcow2", readonly=False)
    other = BlockBackend.open(b, "qcow2", readonly=False)
    bb.write(0, b"AAAA")
    other.write(0, b"BBBB")
    old = list(bb.layers)
    bb.replace_layers(other.layers, close=old)
    assert bb.read(0, 4) == b"BBBB" and bb.filename == b
    assert old[0].lock is not None and old[0].lock.fd is None   # closed, unlocked
    bb.reopen_layer(0, readonly=True)
    assert bb.readonly and bb.read(0, 4) == b"BBBB"
    bb.reopen_layer(0, readonly=False)
    bb.write(4, b"CC")
    bb.close()
    assert open(b, "rb").read(4) == b"QFI\xfb" and os.path.getsize(b) > 0
    check = BlockBackend.open(b, "qcow2")
    assert check.read(0, 6) == b"BBBBCC"
    check.close()
