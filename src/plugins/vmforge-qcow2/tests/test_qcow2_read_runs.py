"""``Qcow2.preadv_runs``: a batch of reads (what ``convert`` asks for) fills what the reads
one at a time fill, with one host read for data clusters that lie one after the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcow2_oracle import needs_qemu, pattern, qemu_io

from vmforge.block import BlockBackend
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.fileio import ImageFile

pytestmark = needs_qemu
KiB, MiB = 1 << 10, 1 << 20


def test_a_batch_reads_what_single_reads_read(tmp_path: Path) -> None:
    img = tmp_path / "r.qcow2"
    Qcow2.create(str(img), 4 * MiB)
    qemu_io(img, "write -P 0xab 0 100k", "write -z 192k 64k", "write -P 0x11 300k 5",
            "write -c -P 0x5c 1M 64k", "write -P 0x77 2M 1M", "write -z -u 2304k 64k")
    runs = [(0, 70 * KiB), (70 * KiB, 1), (100 * KiB, 200 * KiB), (300 * KiB, 64 * KiB),
            (1 * MiB + 3, 70 * KiB), (2 * MiB - 5, 300 * KiB), (2 * MiB + 300 * KiB, 700 * KiB),
            (4 * MiB - 512, 512)]
    with BlockBackend.open(str(img), "qcow2") as bb:
        want = [bb.read(off, n) for off, n in runs]
        bufs = [bytearray(b"\xee" * n) for _, n in runs]
        bb.preadv_runs([(off, memoryview(b)) for (off, _), b in zip(runs, bufs, strict=True)])
    assert [bytes(b) for b in bufs] == want
    assert want[0] == b"\xab" * (70 * KiB) and want[4][:5] == b"\x5c" * 5   # (data, compressed)


def test_data_next_to_each_other_in_the_file_is_one_read(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    img = tmp_path / "r.qcow2"
    Qcow2.create(str(img), 4 * MiB)
    with Qcow2.open(str(img), readonly=False) as q:   # clusters 0, 2, 4, ... one after another
        for k in range(8):
            q.write(k * 128 * KiB, pattern(64 * KiB, k))
    calls: list[int] = []
    real = ImageFile.preadv

    def counted(self, offset, bufs):  # type: ignore[no-untyped-def]
        calls.append(offset)
        real(self, offset, bufs)

    with Qcow2.open(str(img)) as q:
        out = [bytearray(64 * KiB) for _ in range(8)]
        monkeypatch.setattr(ImageFile, "preadv", counted)
        q.preadv_runs([(k * 128 * KiB, memoryview(b)) for k, b in enumerate(out)])
        monkeypatch.undo()
    assert len(calls) == 1
    assert [bytes(b) for b in out] == [pattern(64 * KiB, k) for k in range(8)]


def test_mapping_a_run_looks_at_its_first_entry_only(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import vmforge_qcow2.image as image

    img = tmp_path / "m.qcow2"
    Qcow2.create(str(img), 8 * MiB)
    qemu_io(img, "write -P 0x21 0 1M", "write -z 1M 1M", "write -P 0x22 4M 2M")
    kinds: list[int] = []
    real = image.entry_kind

    def entry_kind(ent: int) -> int:
        kinds.append(ent)
        return real(ent)

    with BlockBackend.open(str(img), "qcow2") as bb:
        want = [(e.offset, e.length, int(e.status), e.host_offset) for e in bb.block_status()]
        monkeypatch.setattr(image, "entry_kind", entry_kind)
        got = [(e.offset, e.length, int(e.status), e.host_offset) for e in bb.block_status()]
        monkeypatch.undo()
    assert got == want and len(want) == 5       # data, zeros, unallocated, data, unallocated
    # (before: an entry_kind per cluster, 128 of them; now one per run)
    assert len(kinds) == 5, kinds
