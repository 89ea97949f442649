"""check() counts what ``qemu-img check`` counts, entry by entry.

Each case takes an image qemu-img made, changes one L1 entry, L2 entry or
subcluster bitmap, and compares the exit status and the numbers of
corruptions and leaks of ``qemu-img check`` and ``vmforge img check``
(QEMU's check_refcounts_l1 / check_refcounts_l2 / check_oflag_copied).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from pathlib import Path

import pytest
from qcow2_oracle import needs_qemu, qemu_img, qemu_io

from vmforge.cli.main import main

pytestmark = needs_qemu
COPIED, COMPRESSED = 1 << 63, 1 << 62


def _vmforge(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["img", *argv])
    return rc, out.getvalue()


def _counts(path: Path) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(exit, corruptions, leaks, check errors) of qemu-img and of vmforge."""
    p = qemu_img("check", "--output", "json", "-f", "qcow2", str(path), check=False)
    theirs = json.loads(p.stdout)
    rc, out = _vmforge("check", "--output", "json", "-f", "qcow2", str(path))
    ours = json.loads(out)
    return ((p.returncode, theirs.get("corruptions", 0), theirs.get("leaks", 0),
             theirs.get("check-errors", 0)),
            (rc, ours.get("corruptions", 0), ours.get("leaks", 0), ours.get("check-errors", 0)))


def _tables(path: Path) -> tuple[int, int]:
    d = path.read_bytes()
    l1 = struct.unpack_from(">Q", d, 40)[0]
    return l1, struct.unpack_from(">Q", d, l1)[0] & 0x00FFFFFFFFFFFE00


def _poke(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">Q", value))


def _peek(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return int(struct.unpack(">Q", f.read(8))[0])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("entries")
    std, ext = d / "std.qcow2", d / "ext.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(std), "4M")
    qemu_io(std, "write -P 1 0 128k", "write -c -P 2 192k 64k")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", str(ext), "4M")
    qemu_io(ext, "write -P 1 0 128k", "write -c -P 2 192k 64k", "write -P 3 264k 2k")
    df = d / "df.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'df.raw'}", str(df), "4M")
    qemu_io(df, "write -P 1 0 128k")
    return {"std": std, "ext": ext, "df": df}


#: (image, table, entry index, word (extended: 0 descriptor, 1 bitmap), new value or
#:  a function of the old one)
CASES = {
    # reserved bits of unallocated and zero entries (qemu-img: corruption)
    "unalloc-bit1": ("std", "l2", 8, 0, 0x2),
    "unalloc-bit8": ("std", "l2", 8, 0, 0x100),
    "unalloc-bit56": ("std", "l2", 8, 0, 1 << 56),
    "unalloc-bit61": ("std", "l2", 8, 0, 1 << 61),
    "zero-bit1": ("std", "l2", 8, 0, 0x3),
    "zero-bit8": ("std", "l2", 8, 0, 0x101),
    # allocated entries
    "data-reserved": ("std", "l2", 0, 0, lambda e: e | 0x2),
    "data-unaligned": ("std", "l2", 0, 0, lambda e: e + 512),
    "zero-alloc-no-copied": ("std", "l2", 0, 0, lambda e: (e & ~COPIED) | 1),
    "zero-alloc-unaligned": ("std", "l2", 0, 0, lambda e: ((e & ~COPIED) | 1) + 512),
    "data-no-copied": ("std", "l2", 1, 0, lambda e: e & ~COPIED),
    "compressed-copied": ("std", "l2", 3, 0, lambda e: e | COPIED),
    "datafile-no-copied": ("df", "l2", 1, 0, lambda e: e & ~COPIED),
    "datafile-compressed": ("df", "l2", 8, 0, COMPRESSED | 0x60000),
    # L1 entries
    "l1-reserved-bit0": ("std", "l1", 0, 0, lambda e: e | 1),
    "l1-reserved-bit56": ("std", "l1", 0, 0, lambda e: e | 1 << 56),
    "l1-reserved-no-offset": ("std", "l1", 1, 0, 1),
    "l1-no-copied": ("std", "l1", 0, 0, lambda e: e & ~COPIED),
    # extended L2: bitmaps
    "ext-unalloc-alloc-bits": ("ext", "l2", 8, 1, 0x1),
    "ext-unalloc-zero-bits": ("ext", "l2", 8, 1, 0xFFFFFFFF << 32),
    "ext-alloc-and-zero": ("ext", "l2", 0, 1, lambda b: b | 1 << 32),
    "ext-compressed-bitmap": ("ext", "l2", 3, 1, 0x4),
    "ext-unalloc-reserved": ("ext", "l2", 8, 0, 0x2),
    "ext-data-bit0": ("ext", "l2", 0, 0, lambda e: e | 1),
    "ext-partial-unalloc-bits": ("ext", "l2", 4, 1, lambda b: b | 1 << 31),
    "clean": ("std", "l2", 9, 0, 0),
}
#: cases qemu-img finds nothing wrong with (nor may we)
CLEAN = {"clean", "ext-unalloc-zero-bits", "ext-partial-unalloc-bits", "ext-data-bit0",
         "l1-reserved-no-offset"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_counts_like_qemu(tmp_path: Path, images: dict[str, Path], case: str) -> None:
    which, table, index, word, value = CASES[case]
    path = tmp_path / "x.qcow2"
    shutil.copyfile(images[which], path)
    l1, l2 = _tables(path)
    width = 16 if which == "ext" else 8
    where = l1 + 8 * index if table == "l1" else l2 + width * index + 8 * word
    new = value(_peek(path, where)) if callable(value) else value
    _poke(path, where, new)
    theirs, ours = _counts(path)
    assert ours == theirs, (case, hex(new))
    assert (theirs[0] == 0) == (case in CLEAN), theirs
    if case in CLEAN:        # what check accepts, map reads as qemu-img does
        rc, out = _vmforge("map", "--output", "json", "-f", "qcow2", str(path))
        assert (rc, out) == (0, qemu_img("map", "--output", "json", "-f", "qcow2",
                                         str(path)).stdout)


def test_leaks_repair_also_fixes_copied_flags(tmp_path: Path, images: dict[str, Path]) -> None:
    """``-r leaks`` repairs OFLAG_COPIED when nothing but leaks was wrong (as QEMU)."""
    path = tmp_path / "x.qcow2"
    shutil.copyfile(images["std"], path)
    _, l2 = _tables(path)
    _poke(path, l2 + 8, _peek(path, l2 + 8) & ~COPIED)
    assert _counts(path)[1][:2] == (2, 1)
    rc, _ = _vmforge("check", "-r", "leaks", "-f", "qcow2", str(path))
    assert rc == 0
    assert qemu_img("check", "-f", "qcow2", str(path), check=False).returncode == 0


def test_refcounts_past_the_end_of_the_file_are_not_leaks(tmp_path: Path,
                                                         images: dict[str, Path]) -> None:
    """A refcount for a cluster past the end of the file: qemu-img ignores it (exit 0)."""
    path = tmp_path / "x.qcow2"
    shutil.copyfile(images["std"], path)
    size = path.stat().st_size
    d = path.read_bytes()
    reftable = struct.unpack_from(">Q", d, 48)[0]
    block = struct.unpack_from(">Q", d, reftable)[0]
    cluster = size // 65536 + 3                     # well past the end, same block
    with open(path, "r+b") as f:
        f.seek(block + 2 * cluster)
        f.write(struct.pack(">H", 1))
    theirs, ours = _counts(path)
    assert theirs == (0, 0, 0, 0)
    assert ours == theirs
