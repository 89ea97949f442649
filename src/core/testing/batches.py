"""Checks of a format's batched I/O for plugins' tests: ``pwritev_runs`` and
``preadv_runs``, what ``convert`` writes and reads a buffer's worth with.

::

    from vmforge.testing.batches import count_calls, write_single_and_batched

    def test_a_batch_is_the_file_single_writes_make(tmp_path):
        one, batch = tmp_path / "one.myf", tmp_path / "batch.myf"
        write_single_and_batched("myfmt", lambda p: MyFormat.create(str(p), SIZE),
                                 one, batch, RUNS)
        assert one.read_bytes() == batch.read_bytes()
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vmforge.block.backend import BlockBackend

__all__ = ["RUNS_ACROSS_BLOCKS", "assert_pieces_in_a_row_in_one_call", "count_calls",
           "seeded", "write_single_and_batched"]

_K = 1024
_MiB = _K * _K
#: ``(offset, length)`` runs for an image of 12 MiB with blocks of 2 MiB or less: new
#: blocks and blocks already written, pieces side by side and apart, across blocks
RUNS_ACROSS_BLOCKS = [(0, 64 * _K), (64 * _K, 64 * _K), (192 * _K, 4 * _K),
                      (2 * _MiB - 512, 8 * _K), (5 * _MiB, 3 * _MiB), (100 * _K, 512),
                      (9 * _MiB + 512, 4096)]


def count_calls(monkeypatch: Any, owner: object, *names: str) -> dict[str, int]:
    """Count the calls of ``owner.NAME`` for each of ``names`` (``os``, ``"pwritev"``)
    from now until ``monkeypatch`` undoes it; the counts by name."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(owner, name)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(owner, name, counted)
    return calls


def seeded(runs: Sequence[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """``(offset, length)`` runs as ``(offset, data)``: seeded random bytes each."""
    return [(off, random.Random(off).randbytes(n)) for off, n in runs]


def write_single_and_batched(fmt: str, make: Callable[[Path], object], one: Path,
                             batch: Path, runs: Sequence[tuple[int, bytes]],
                             copy: bool = True) -> bytearray:
    """New images ``one`` and ``batch`` (``make(path)`` creates one; with ``copy``,
    ``batch`` is a copy of the new ``one``: the same UUIDs and time stamps), ``runs``
    written into ``one`` a write each and into ``batch`` with one ``pwritev_runs``;
    ``batch`` must read as they say.  Returns what the images hold (compare the
    files: the caller knows whether they match byte for byte)."""
    make(one)
    if copy:
        shutil.copyfile(one, batch)
    else:
        make(batch)
    with BlockBackend.open(str(one), fmt, readonly=False) as bb:
        expect = bytearray(bb.size)
        for off, data in runs:
            bb.write(off, data)
            expect[off:off + len(data)] = data
    with BlockBackend.open(str(batch), fmt, readonly=False) as bb:
        bb.pwritev_runs([(off, memoryview(data)) for off, data in runs])
    with BlockBackend.open(str(batch), fmt) as bb:
        assert bb.read(0, bb.size) == expect
    return expect


def assert_pieces_in_a_row_in_one_call(fmt: str, make: Callable[[Path], object], img: Path,
                                       monkeypatch: Any) -> None:
    """8 pieces of 4 KiB side by side in a block the image has already (its first
    512 bytes written): ``pwritev_runs`` writes them with one ``pwritev``."""
    import os

    make(img)
    with BlockBackend.open(str(img), fmt, readonly=False) as bb:
        bb.write(0, b"x" * 512)                  # the block, allocated
        runs = [(off, bytes([off // 4096 + 1]) * 4096) for off in range(4096, 36864, 4096)]
        calls = count_calls(monkeypatch, os, "pwritev")
        bb.pwritev_runs([(off, memoryview(data)) for off, data in runs])
        monkeypatch.undo()
        assert calls["pwritev"] == 1
        for off, data in runs:
            assert bb.read(off, len(data)) == data
