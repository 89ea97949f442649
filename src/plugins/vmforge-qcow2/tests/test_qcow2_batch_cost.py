"""What a batch of writes (``pwritev_runs``, convert's writing thread) costs in
table work: the new clusters' places are checked an L2 table and a refcount block
at a time, not entry by entry; the file is the same as before (see
test_qcow2_write_runs.py for the layout against single writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern

from vmforge_qcow2 import Qcow2
from vmforge_qcow2.refcount import RefcountBlockCodec

pytestmark = needs_qemu
KiB, MiB = 1 << 10, 1 << 20


@pytest.mark.parametrize("opts", [{}, {"refcount_bits": 8}, {"refcount_bits": 64}])
def test_a_batch_checks_its_clusters_without_a_lookup_per_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opts: dict) -> None:
    img = tmp_path / "b.qcow2"
    Qcow2.create(str(img), 16 * MiB, **opts)
    # 96 runs of a cluster each with a cluster of zeros between them (what convert
    # hands over for the mixed image): 96 new clusters, in a row in the file
    runs = [(2 * k * 64 * KiB, memoryview(pattern(64 * KiB, k))) for k in range(96)]
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(15 * MiB, b"x")        # (the L2 table and the refcount block exist)
        gets: list[int] = []
        lookups: list[int] = []
        real_get, real_entry_at = RefcountBlockCodec.get, Qcow2._entry_at

        def get(self, blk, i):  # type: ignore[no-untyped-def]
            gets.append(i)
            return real_get(self, blk, i)

        def entry_at(self, l1, gci):  # type: ignore[no-untyped-def]
            lookups.append(gci)
            return real_entry_at(self, l1, gci)

        monkeypatch.setattr(RefcountBlockCodec, "get", get)
        monkeypatch.setattr(Qcow2, "_entry_at", entry_at)
        q.pwritev_runs(runs)
        monkeypatch.undo()
        # (before: a lookup per cluster, and refcount entries read one by one: to
        # see that the 96 after the first free one are free, then twice to set them;
        # entries narrower than a byte still are)
        assert lookups == []
        assert len(gets) < 16
        for off, data in runs:
            assert q.read(off, data.nbytes) == data
    assert_qemu_clean(img)


def test_a_run_of_clusters_goes_to_its_write_as_one_slice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmforge_qcow2.image import Cursor

    img = tmp_path / "s.qcow2"
    Qcow2.create(str(img), 16 * MiB)
    # four runs of eight clusters (what convert hands over for 512 KiB of data between
    # zeros), new clusters in a row in the file; then the same again, in place
    runs = [(k * MiB, memoryview(pattern(512 * KiB, k))) for k in range(4)]
    takes: list[int] = []
    real_take = Cursor.take

    def take(self, n):  # type: ignore[no-untyped-def]
        takes.append(n)
        return real_take(self, n)

    with Qcow2.open(str(img), readonly=False) as q:
        for round_ in range(2):
            takes.clear()
            monkeypatch.setattr(Cursor, "take", take)
            q.pwritev_runs(runs)
            monkeypatch.undo()
            assert takes == [512 * KiB] * 4, round_      # (before: 32 of 64 KiB)
        for off, data in runs:
            assert q.read(off, data.nbytes) == data
    assert_qemu_clean(img)


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_runs_that_share_clusters_allocate_each_once(tmp_path: Path, order: str) -> None:
    import random

    img, single = tmp_path / "b.qcow2", tmp_path / "s.qcow2"
    for p in (img, single):
        Qcow2.create(str(p), 16 * MiB)
    # runs of 4-32 KiB every 40 KiB: most end in the cluster the next one starts in;
    # one cluster already allocated, one run of whole new clusters
    runs = [(k * 40 * KiB + 4 * KiB, memoryview(pattern(4 * KiB * (1 + k % 8), k)))
            for k in range(60)] + [(8 * MiB, memoryview(pattern(512 * KiB, 99)))]
    if order == "shuffled":
        random.Random(1).shuffle(runs)
    for p, batch in ((img, True), (single, False)):
        with Qcow2.open(str(p), readonly=False) as q:
            q.write(64 * KiB, b"y" * 100)
            if batch:
                q.pwritev_runs(runs)
            else:
                for off, data in runs:
                    q.write(off, data)
            for off, data in runs:
                assert q.read(off, data.nbytes) == data
    assert_qemu_clean(img)
    assert img.read_bytes() == single.read_bytes()    # the places single writes give
