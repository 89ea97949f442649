"""``Qcow2.pwritev_runs``: a batch of writes (what ``convert`` hands over) leaves the same
file as the writes one at a time, with fewer host writes, and no L2 entry before its data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qcow2_oracle import Crash, assert_qemu_clean, count_writes, needs_qemu, pattern, qemu_check

from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
KiB, MiB = 1 << 10, 1 << 20


def _runs(cs: int) -> list[tuple[int, bytes]]:
    """Sub-cluster pieces sharing a cluster, adjacent and spread runs, a run over
    an earlier one, and (with small clusters) runs across L2 tables."""
    spots = [(0, 3000), (3 * KiB, 1000), (8 * KiB, 60 * KiB), (128 * KiB, 64 * KiB),
             (192 * KiB, 200 * KiB), (1 * MiB + 7, 5000), (1 * MiB + 100, 300),
             (2 * MiB - cs, 3 * cs), (3 * MiB, 64 * KiB)]
    return [(off, pattern(n, k)) for k, (off, n) in enumerate(spots)]


@pytest.mark.parametrize("opts", [{}, {"cluster_size": 512}, {"compat": "0.10"},
                                  {"cluster_size": 4096, "refcount_bits": 1}])
def test_a_batch_writes_what_single_writes_write(tmp_path: Path, opts: dict) -> None:
    one, batch = tmp_path / "one.qcow2", tmp_path / "batch.qcow2"
    Qcow2.create(str(one), 4 * MiB, **opts)
    shutil.copyfile(one, batch)
    with Qcow2.open(str(one), readonly=False) as q:
        runs = _runs(q.cluster_size)
        for off, data in runs:
            q.pwritev(off, [memoryview(data)])
    with Qcow2.open(str(batch), readonly=False) as q:
        q.pwritev_runs([(off, memoryview(data)) for off, data in runs])
        model = bytearray(q.size)
        for off, data in runs:
            model[off:off + len(data)] = data
        assert q.read(0, q.size) == model
    assert batch.read_bytes() == one.read_bytes()   # same layout, byte for byte
    assert_qemu_clean(batch)


def test_runs_that_meet_in_the_file_are_one_write(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    img = tmp_path / "w.qcow2"
    Qcow2.create(str(img), 4 * MiB)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"x")           # (the L2 table)
        runs = [(k * 128 * KiB, memoryview(pattern(64 * KiB, k))) for k in range(1, 9)]
        count = count_writes(monkeypatch, None)
        q.pwritev_runs(runs)       # eight clusters, one after the other in the file
        assert count[0] == 1
        monkeypatch.undo()
        for off, data in runs:
            assert q.read(off, data.nbytes) == data


def test_a_crash_in_a_batch_leaves_no_corruption(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """512-byte clusters and a cache of four L2 tables: the batch maps more L2 tables
    than the barrier threshold (two); the L2 entries must still reach the file after
    their data."""
    base = tmp_path / "base.qcow2"
    Qcow2.create(str(base), 4 * MiB, cluster_size=512)
    runs = [(off, memoryview(data)) for k, (off, data) in enumerate(_runs(512)) if k != 6]
    model = bytearray(4 * MiB)            # (no two of these runs share a cluster)
    for off, data in runs:
        model[off:off + data.nbytes] = data
    count = count_writes(monkeypatch, None)
    shutil.copyfile(base, tmp_path / "fresh.qcow2")
    with Qcow2.open(str(tmp_path / "fresh.qcow2"), readonly=False, l2_cache_size=2048) as q:
        count[0] = 0
        q.pwritev_runs(runs)
        q.flush()
        total = count[0]
    monkeypatch.undo()
    for n in range(total):
        img = tmp_path / f"crash{n}.qcow2"
        shutil.copyfile(base, img)
        count_writes(monkeypatch, n)
        q = Qcow2.open(str(img), readonly=False, l2_cache_size=2048)
        with pytest.raises(Crash):
            q.pwritev_runs(runs)
            q.flush()
        q.f.close()            # abandon: no flush, no close
        q.closed = True
        monkeypatch.undo()
        r = qemu_check(img)
        assert r.get("corruptions", 0) == 0 and r.get("check-errors", 0) == 0, (n, r)
        with Qcow2.open(str(img)) as q2:   # each cluster: not mapped yet, or its data
            got = q2.read(0, q2.size)
        for c in range(0, len(got), 512):
            assert got[c:c + 512] in (bytes(512), model[c:c + 512]), (n, c)


def _recording(alloc, sizes: list[int]):
    """``alloc`` (or ``alloc_next``) telling ``sizes`` of each allocation it made."""
    def recorded(n: int, defer: bool = False) -> int | None:
        got = alloc(n, defer)
        if got is not None:
            sizes.append(n)
        return got
    return recorded


def test_a_batch_allocates_its_clusters_at_once_where_the_layout_allows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One allocation for the batch when its new clusters lie in a row from the first
    free one (a fresh image's end); one per run when the free space has holes, the
    file then the same as with single writes."""
    runs = [(k * 192 * KiB, memoryview(pattern(64 * KiB + k * KiB, k))) for k in range(1, 7)]
    for holes in (False, True):
        one, batch = tmp_path / f"one{holes}.qcow2", tmp_path / f"batch{holes}.qcow2"
        Qcow2.create(str(one), 4 * MiB)
        with Qcow2.open(str(one), readonly=False) as q:
            q.write(0, b"x")                      # (the L2 table)
            if holes:                             # free clusters apart from each other
                for k in range(4):
                    q.write(3 * MiB + k * 128 * KiB, b"y")
                for k in range(0, 4, 2):
                    q.discard(3 * MiB + k * 128 * KiB, 64 * KiB)
                q.flush()
        shutil.copyfile(one, batch)
        with Qcow2.open(str(one), readonly=False) as q:
            for off, data in runs:
                q.pwritev(off, [data])
        with Qcow2.open(str(batch), readonly=False) as q:
            allocs: list[int] = []
            monkeypatch.setattr(q.refs, "alloc", _recording(q.refs.alloc, allocs))
            monkeypatch.setattr(q.refs, "alloc_next", _recording(q.refs.alloc_next, allocs))
            q.pwritev_runs(runs)
            monkeypatch.undo()
            for off, data in runs:
                assert q.read(off, data.nbytes) == data
        assert allocs == ([2] * 6 if holes else [12])
        assert batch.read_bytes() == one.read_bytes()
        assert_qemu_clean(batch)
