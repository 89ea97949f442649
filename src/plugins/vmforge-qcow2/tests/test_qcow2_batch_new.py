"""A batch of new whole clusters (convert into a new image, after its first batch) is
mapped at once: no run-by-run planning, one data write, the file single writes give."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern

from vmforge_qcow2 import Qcow2
from vmforge_qcow2.fileio import ImageFile
from vmforge_qcow2.l2 import OFLAG_COPIED, copied_entries

KiB, MiB = 1 << 10, 1 << 20


@needs_qemu
@pytest.mark.parametrize("cs, start", [(64 * KiB, 0), (4 * KiB, 0), (4 * KiB, 1536 * KiB)])
def test_new_whole_clusters_of_a_batch_are_mapped_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cs: int, start: int) -> None:
    img, single = tmp_path / "b.qcow2", tmp_path / "s.qcow2"
    # runs of 1-5 clusters with 1-2 clusters of zeros between them (convert's mixed
    # image), none allocated, in the first L2 table (4 KiB clusters from 1.5 MiB on:
    # in the first two, 2 MiB each)
    runs, off = [], start
    for k in range(40):
        n = cs * (1 + k % 5)
        runs.append((off, memoryview(pattern(n, k))))
        off += n + cs * (1 + k % 2)
    calls: list[str] = []
    real_in_l2, real_pwritev = Qcow2._write_in_l2, ImageFile.pwritev

    def in_l2(self, *a):  # type: ignore[no-untyped-def]
        calls.append("l2")
        return real_in_l2(self, *a)

    def pwritev(self, *a):  # type: ignore[no-untyped-def]
        calls.append("pwritev")
        return real_pwritev(self, *a)

    for p, batch in ((img, True), (single, False)):
        Qcow2.create(str(p), 16 * MiB, cluster_size=cs)
        with Qcow2.open(str(p), readonly=False) as q:
            q.write(off + cs, b"y" * 100)     # the L2 tables exist: the image owns them
            if start:
                q.write(0, b"z")             # (and the first one too)
            if batch:
                monkeypatch.setattr(Qcow2, "_write_in_l2", in_l2)
                monkeypatch.setattr(ImageFile, "pwritev", pwritev)
                q.pwritev_runs(runs)
                monkeypatch.undo()
            else:
                for o, data in runs:
                    q.write(o, data)
            for o, data in runs:
                assert q.read(o, data.nbytes) == data
    # (before: a _write_in_l2 per run)
    assert calls == ["pwritev"]
    assert_qemu_clean(img)
    assert img.read_bytes() == single.read_bytes()


def test_a_batch_with_an_allocated_or_partial_cluster_goes_run_by_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = tmp_path / "p.qcow2"
    Qcow2.create(str(img), 16 * MiB)
    seen: list[int] = []
    real = Qcow2._write_in_l2

    def in_l2(self, pos, end, cur):  # type: ignore[no-untyped-def]
        seen.append(pos)
        return real(self, pos, end, cur)

    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"x")
        for runs in ([(0, memoryview(pattern(128 * KiB, 1))),        # cluster 0 is allocated
                      (256 * KiB, memoryview(pattern(64 * KiB, 2)))],
                     [(1 * MiB, memoryview(pattern(64 * KiB, 3))),  # half a cluster
                      (2 * MiB, memoryview(pattern(32 * KiB, 4)))]):
            seen.clear()
            monkeypatch.setattr(Qcow2, "_write_in_l2", in_l2)
            q.pwritev_runs(runs)
            monkeypatch.undo()
            assert seen == [o for o, _ in runs]
            for o, data in runs:
                assert q.read(o, data.nbytes) == data


@pytest.mark.parametrize("host, count, cs", [(0x50000, 7, 64 * KiB), (1 << 40, 3, 512),
                                             ((1 << 56) - 2 * 4096, 3, 4096), (4096, 0, 4096)])
def test_copied_entries_are_the_offsets_with_the_copied_flag(host: int, count: int,
                                                              cs: int) -> None:
    want = array("Q", [(host + k * cs) | OFLAG_COPIED for k in range(count)])
    assert copied_entries(host, count, cs) == want
