"""MappedImage's batched reads and writes (``preadv_runs``/``pwritev_runs``, what
``convert`` uses): the same bytes as one call per run, fewer system calls."""

from __future__ import annotations

import os

import pytest

from vmforge.block.backend import BlockBackend, create_image
from vmforge.testing.batches import count_calls

pytest.importorskip("vmforge_vdi")
K = 1024
M = K * K


def _runs() -> list[tuple[int, memoryview]]:
    # three pieces of one 1 MiB block (allocated by the first, in place after it), a
    # piece of another block and one that straddles two blocks
    return [(off, memoryview(bytes([i + 1]) * n)) for i, (off, n) in enumerate(
        [(0, 64 * K), (64 * K, 64 * K), (128 * K, 4 * K), (3 * M + 512, 8 * K),
         (2 * M - 4 * K, 8 * K)])]


def test_runs_write_and_read_as_one_call_per_run_would(tmp_path, monkeypatch) -> None:
    one, batched = str(tmp_path / "one.vdi"), str(tmp_path / "batched.vdi")
    for path in (one, batched):
        create_image("vdi", path, 4 * M)
    with BlockBackend.open(one, "vdi", readonly=False) as bb:
        for off, data in _runs():
            bb.pwritev(off, [data])
    with BlockBackend.open(batched, "vdi", readonly=False) as bb:
        calls = count_calls(monkeypatch, os, "pwritev")
        bb.pwritev_runs(_runs())
        monkeypatch.undo()
    with open(one, "rb") as a, open(batched, "rb") as b:
        # the same file, layout included (past the header: its UUIDs are random)
        assert a.read()[512:] == b.read()[512:]
    # 4 blocks allocated (one write each), the two in-place pieces after the first
    # one in one call
    assert calls["pwritev"] == 5
    expect = bytearray(4 * M)
    for off, data in _runs():
        expect[off:off + data.nbytes] = data
    with BlockBackend.open(batched, "vdi") as bb:
        bufs = [(off, memoryview(bytearray(n))) for off, n in
                [(0, 64 * K), (64 * K, 96 * K), (160 * K, 4 * K),   # one block, in a row
                 (M, 8 * K),                                        # not allocated: zeros
                 (2 * M - 4 * K, 12 * K), (4 * M - 4 * K, 4 * K)]]
        calls = count_calls(monkeypatch, os, "preadv")
        bb.preadv_runs(bufs)
        monkeypatch.undo()
        for off, buf in bufs:
            assert bytes(buf) == expect[off:off + buf.nbytes]
        # the first three in one call; each of the other stored pieces in its own
        assert calls["preadv"] == 4

