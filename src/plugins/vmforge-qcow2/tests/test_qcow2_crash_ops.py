"""Crash consistency of the whole-image operations: snapshots, resize, commit, rebase.

As in ``test_qcow2_crash``, every ``pwrite``/``pwritev`` is a step; the
operation is stopped after N steps, for every N, and the files are abandoned
as they are.  "At most leaks" is checked the way QEMU defines it:

- ``qemu-img check`` finds no refcount lower than the references (no
  ``ERROR cluster N refcount=X reference=Y``) and no check errors;
- ``qemu-img check -r leaks`` leaves a clean image (QEMU repairs OFLAG_COPIED
  flags in that mode only when the refcounts were merely leaked);
- before any repair, writing over the whole active image does not change
  any snapshot the table lists, and every image reads as before or after
  the operation;
- an image left with its dirty bit set (``commit`` empties its top as QEMU
  does: refcounts knowingly broken under that bit) is repaired by
  ``qemu-img check -r all``, as opening it read-write repairs it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from qcow2_oracle import Crash, count_writes, needs_qemu, pattern, qemu_img

from vmforge.block import ops
from vmforge.block.backend import BlockBackend
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20
SIZE = 2 * MiB
OPTS = [{}, {"extended_l2": True, "cluster_size": 16384},
        {"cluster_size": 4096, "refcount_bits": 4}]


def _abandon_all(opened: list[Qcow2]) -> None:
    for q in opened:
        if not q.closed:
            q.f.close()
            q.closed = True


def _track_opens(monkeypatch: pytest.MonkeyPatch) -> list[Qcow2]:
    """Remember every image opened, to abandon them after the crash (no close)."""
    opened: list[Qcow2] = []
    real = Qcow2.open.__func__  # type: ignore[attr-defined]

    def open_(cls, path, **kw):  # type: ignore[no-untyped-def]
        q = real(cls, path, **kw)
        opened.append(q)
        return q

    monkeypatch.setattr(Qcow2, "open", classmethod(open_))
    return opened


_REFCOUNT_LOW = re.compile(r"ERROR cluster \d+ refcount=(\d+) reference=(\d+)")


def _dirty(img: Path) -> bool:
    """The header's dirty bit (incompatible feature 0): the refcounts may be wrong
    and are rebuilt when the image is next opened read-write (QEMU and vmforge)."""
    with open(img, "rb") as f:
        head = f.read(80)
    return int.from_bytes(head[4:8], "big") >= 3 and bool(head[79] & 1)


def _assert_at_most_leaks(img: Path, tag: object) -> None:
    if _dirty(img):                 # (commit's emptying of the top, as QEMU's)
        copy = img.with_suffix(".repaired")
        shutil.copyfile(img, copy)
        p = qemu_img("check", "-r", "all", "-f", "qcow2", str(copy), check=False)
        assert p.returncode == 0, (tag, p.stdout, p.stderr)
        return
    p = qemu_img("check", "-f", "qcow2", "--output", "json", str(img), check=False)
    assert p.returncode in (0, 2, 3), (tag, p.stderr)
    r = json.loads(p.stdout)
    assert r.get("check-errors", 0) == 0, (tag, r, p.stderr)
    assert not _REFCOUNT_LOW.search(p.stderr), (tag, p.stderr)
    copy = img.with_suffix(".repaired")
    shutil.copyfile(img, copy)
    p = qemu_img("check", "-r", "leaks", "-f", "qcow2", str(copy), check=False)
    assert p.returncode == 0, (tag, p.stdout, p.stderr)


def _snapshot_data(img: Path) -> dict[str, bytes]:
    out = {}
    with Qcow2.open(str(img)) as q:
        names = [s.name for s in q.list_snapshots()]
    for name in names:
        with Qcow2.open(str(img), snapshot=name) as q:
            out[name] = q.read(0, q.size)
    return out


def _run_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 files: list[str], operation: Callable[[dict[str, Path]], None],
                 check: Callable[[dict[str, Path], int], None]) -> int:
    """Run ``operation`` on copies of ``files`` (in tmp_path), crashing after every write."""
    base = {f: tmp_path / f for f in files}
    work = tmp_path / "ok"
    work.mkdir()
    paths = {f: work / f for f in files}
    for f in files:
        shutil.copyfile(base[f], paths[f])
    count = count_writes(monkeypatch, None)
    operation(paths)
    total = count[0]
    monkeypatch.undo()
    assert total >= 3
    check(paths, total)                       # the finished operation passes too
    for n in range(total):
        d = tmp_path / f"crash{n}"
        d.mkdir()
        paths = {f: d / f for f in files}
        for f in files:
            shutil.copyfile(base[f], paths[f])
        opened = _track_opens(monkeypatch)
        count_writes(monkeypatch, n)
        with pytest.raises(Crash):
            operation(paths)
        _abandon_all(opened)
        monkeypatch.undo()
        check(paths, n)
        shutil.rmtree(d)
    return total


def _image_with_snapshots(path: Path, opts: dict) -> dict[str, bytes]:
    """An image with snapshots s1 and s2 over different contents; returns what each reads."""
    Qcow2.create(str(path), SIZE, **opts)
    with Qcow2.open(str(path), readonly=False) as q:
        q.write(0, pattern(SIZE // 2, 1))
        q.write_compressed(SIZE - 2 * q.cluster_size, pattern(q.cluster_size, 9))
        q.create_snapshot("s1")
        q.write(4096, pattern(SIZE // 4, 2))
        q.write_zeroes(SIZE // 2 + 8192, 3 * q.cluster_size)
        q.create_snapshot("s2")
        q.write(SIZE // 2, pattern(100_000, 3))
        q.flush()
    snaps = _snapshot_data(path)
    with Qcow2.open(str(path)) as q:
        snaps["active"] = q.read(0, SIZE)
    return snaps


def _check_snapshot_image(before: dict[str, bytes], active_states: list[bytes]
                          ) -> Callable[[dict[str, Path], int], None]:
    def check(paths: dict[str, Path], n: int) -> None:
        img = paths["a.qcow2"]
        _assert_at_most_leaks(img, n)
        with Qcow2.open(str(img)) as q:
            assert q.read(0, SIZE) in active_states, n
        # the danger: an OFLAG_COPIED left on a shared cluster lets the next write
        # change a snapshot.  Write everywhere, then read the snapshots back.
        with Qcow2.open(str(img), readonly=False) as q:
            q.write(0, pattern(SIZE, 77))
        for name, data in _snapshot_data(img).items():
            assert data == before[name], (n, name)
        _assert_at_most_leaks(img, n)
    return check


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("action", ["create", "delete", "apply"])
def test_snapshot_ops_crash_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     opts: dict, action: str) -> None:
    before = _image_with_snapshots(tmp_path / "a.qcow2", opts)
    states = [before["active"]]
    if action == "apply":
        states.append(before["s1"])

    def operation(paths: dict[str, Path]) -> None:
        with Qcow2.open(str(paths["a.qcow2"]), readonly=False) as q:
            if action == "create":
                q.create_snapshot("s3")
            elif action == "delete":
                q.delete_snapshot("s1")
            else:
                q.revert_snapshot("s1")

    snaps = dict(before)
    snaps["s3"] = before["active"]
    _run_crashes(tmp_path, monkeypatch, ["a.qcow2"], operation,
                 _check_snapshot_image(snaps, states))


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("new_size", [SIZE // 2 - 512, 1 << 30])
def test_resize_crash_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               opts: dict, new_size: int) -> None:
    img = tmp_path / "a.qcow2"
    Qcow2.create(str(img), SIZE, **opts)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, pattern(SIZE, 5))
    keep = min(SIZE, new_size)
    data = pattern(SIZE, 5)[:keep]

    def operation(paths: dict[str, Path]) -> None:
        with Qcow2.open(str(paths["a.qcow2"]), readonly=False) as q:
            q.truncate(new_size)

    def check(paths: dict[str, Path], n: int) -> None:
        _assert_at_most_leaks(paths["a.qcow2"], n)
        with Qcow2.open(str(paths["a.qcow2"])) as q:
            assert q.size in (SIZE, new_size), n
            assert q.read(0, keep) == data, n
            if q.size > keep:
                tail = q.read(keep, q.size - keep)
                assert tail.count(0) == len(tail) or new_size < SIZE, n
        if new_size < SIZE:
            with Qcow2.open(str(paths["a.qcow2"]), readonly=False) as q:
                if q.size == new_size:     # shrunk: growing again shows zeros, not old data
                    q.truncate(SIZE)
                    tail = q.read(keep, SIZE - keep)
                    assert tail.count(0) == len(tail), n

    _run_crashes(tmp_path, monkeypatch, ["a.qcow2"], operation, check)


def _chain(tmp_path: Path, opts: dict) -> bytes:
    """base.qcow2 <- top.qcow2, both partly allocated; returns what the chain reads."""
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    Qcow2.create(str(base), SIZE, **opts)
    with Qcow2.open(str(base), readonly=False) as q:
        q.write(0, pattern(SIZE, 6))
    Qcow2.create(str(top), SIZE, backing_file="base.qcow2", backing_fmt="qcow2", **opts)
    with BlockBackend.open(str(top), "qcow2", readonly=False) as bb:
        bb.write(100_000, pattern(300_000, 7))
        bb.write_zeroes(SIZE // 2, 200_000)
        bb.write(SIZE - 70_000, pattern(70_000, 8))
        return bb.read(0, SIZE)


@pytest.mark.parametrize("opts", OPTS[:2])
def test_commit_crash_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               opts: dict) -> None:
    want = _chain(tmp_path, opts)

    def operation(paths: dict[str, Path]) -> None:
        with BlockBackend.open(str(paths["top.qcow2"]), "qcow2", readonly=False) as top, \
                BlockBackend.open(str(paths["base.qcow2"]), "qcow2", readonly=False,
                                  backing=False) as base:
            ops.commit(top, base)

    def check(paths: dict[str, Path], n: int) -> None:
        for f in paths.values():
            _assert_at_most_leaks(f, n)
        with BlockBackend.open(str(paths["top.qcow2"]), "qcow2") as bb:
            assert bb.read(0, SIZE) == want, n

    _run_crashes(tmp_path, monkeypatch, ["base.qcow2", "top.qcow2"], operation, check)


@pytest.mark.parametrize("opts", OPTS[:2])
def test_rebase_crash_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               opts: dict) -> None:
    want = _chain(tmp_path, opts)
    other = tmp_path / "other.qcow2"
    Qcow2.create(str(other), SIZE, **opts)
    with Qcow2.open(str(other), readonly=False) as q:
        q.write(SIZE // 4, pattern(SIZE // 2, 10))

    def operation(paths: dict[str, Path]) -> None:
        with BlockBackend.open(str(paths["top.qcow2"]), "qcow2", readonly=False) as top, \
                BlockBackend.open(str(paths["other.qcow2"]), "qcow2") as new:
            ops.rebase(top, new, "other.qcow2", "qcow2")

    def check(paths: dict[str, Path], n: int) -> None:
        _assert_at_most_leaks(paths["top.qcow2"], n)
        with BlockBackend.open(str(paths["top.qcow2"]), "qcow2") as bb:
            assert bb.read(0, SIZE) == want, n

    _run_crashes(tmp_path, monkeypatch, ["base.qcow2", "top.qcow2", "other.qcow2"],
                 operation, check)
