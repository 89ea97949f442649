"""How ``block.ops.convert`` feeds its writing thread: the first writes are handed
over before the block status of the whole source is known (a raw file's extents
cost an lseek or two each: asking them all first kept the writer idle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmforge.block import BlockBackend, driver_class, ops
from vmforge.testing.images import MiB, write_mixed


def test_first_writes_go_before_the_whole_block_status(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = str(tmp_path / "s.raw"), str(tmp_path / "d.raw")
    size = 16 * MiB
    data = write_mixed(src, size)     # 64 KiB pieces: hundreds of extents
    driver_class("raw").create(dst, size)
    reached: list[int] = []           # how far block status had gone
    at_submit: list[int] = []         # ... at each hand-over to the writing thread
    real_submit = ops._Writer.submit

    def submit(self: ops._Writer, buf: object = None) -> None:
        at_submit.append(reached[-1])
        real_submit(self, buf)        # type: ignore[arg-type]

    monkeypatch.setattr(ops._Writer, "submit", submit)
    with BlockBackend.open(src, "raw") as s, \
            BlockBackend.open(dst, "raw", readonly=False) as t:
        real_status = s.block_status

        def block_status(offset: int = 0, length: int | None = None):  # type: ignore[no-untyped-def]
            for e in real_status(offset, length):
                reached.append(e.end)
                yield e

        monkeypatch.setattr(s, "block_status", block_status)
        ops.convert([s], t)
    assert Path(dst).read_bytes() == data
    assert len(at_submit) > 4
    assert at_submit[0] <= size // 4   # about a buffer of data, not the whole image
    assert reached[-1] == size
