"""Crash consistency: stopping after any single write leaves an image with, at worst, leaks.

Every ``pwrite``/``pwritev`` of the driver is a step; the test lets the first
N steps through, then "crashes" (the next write raises and the file is
abandoned) and asks ``qemu-img check`` about what is on disk.  Allocation
order (refcount, data, L2, L1; old references dropped last) must keep
corruptions at zero for every N, and data written before the crash intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qcow2_oracle import Crash, count_writes, needs_qemu, pattern, qemu_check

from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


def _scenario(q: Qcow2) -> None:
    q.write(0, pattern(3000, 1))                 # new L2 table, partial cluster
    q.write(40000, pattern(70000, 2))            # clusters across refcount blocks
    q.write(200000, pattern(150000, 3))          # grows the refcount table
    q.write_zeroes(40448, 4096, may_unmap=True)
    q.write_compressed(512 * 1024, b"c" * q.cluster_size)
    q.write(100, b"overwrite in place")
    q.flush()                                    # the barrier: deferred metadata goes out
    q.write(300000, pattern(5000, 4))            # a rewrite that frees nothing yet
    q.discard(0, 2 * q.cluster_size)             # frees, deferred to the next barrier
    q.flush()


@pytest.mark.parametrize("opts", [{"cluster_size": 512, "refcount_bits": 64}, {},
                                  {"extended_l2": True, "cluster_size": 16384},
                                  {"lazy_refcounts": True}])
def test_crash_after_every_write_leaves_no_corruption(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      opts: dict) -> None:
    base = tmp_path / "base.qcow2"
    Qcow2.create(str(base), 2 * MiB, **opts)
    count = count_writes(monkeypatch, None)
    shutil.copyfile(base, tmp_path / "fresh.qcow2")
    with Qcow2.open(str(tmp_path / "fresh.qcow2"), readonly=False) as q:
        count[0] = 0
        _scenario(q)
        total = count[0]
    assert total > 10
    monkeypatch.undo()
    step = max(1, total // 20)
    for n in [*range(0, total, step), total - 1]:
        img = tmp_path / f"crash{n}.qcow2"
        shutil.copyfile(base, img)
        count_writes(monkeypatch, n)
        q = Qcow2.open(str(img), readonly=False)
        with pytest.raises(Crash):
            _scenario(q)
        q.f.close()            # abandon: no flush, no close
        q.closed = True
        monkeypatch.undo()
        r = qemu_check(img)
        if not opts.get("lazy_refcounts"):   # lazy: stale refcounts until repaired on open
            assert r.get("corruptions", 0) == 0, (n, r)
        assert r.get("check-errors", 0) == 0, (n, r)
        with Qcow2.open(str(img), readonly=False) as q2:
            # every cluster is in one of the states the scenario passes through
            p1 = pattern(3000, 1)
            p2 = p1[:100] + b"overwrite in place" + p1[118:]
            got, cs = q2.read(0, 3000), q2.cluster_size
            for a in range(0, 3000, cs):
                chunk = got[a:a + cs]
                assert chunk in (bytes(len(chunk)), p1[a:a + cs], p2[a:a + cs]), (n, a)
            q2.check(repair="leaks")
        r = qemu_check(img)
        assert r.get("leaks", 0) == 0 and r.get("corruptions", 0) == 0, (n, r)
