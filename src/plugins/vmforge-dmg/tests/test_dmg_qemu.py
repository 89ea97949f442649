"""dmg images built by vmforge's writer against Debian's qemu-img: it reads the
raw, zero, ignore and zlib ones as vmforge does; it cannot read bzip2 or lzfse
chunks (Debian ships those decompressors in qemu-block-extra, not in
qemu-utils), which the tests check too, so that they notice when it can."""

from __future__ import annotations

from pathlib import Path

import pytest
from dmg_images import build_dmg

from vmforge.testing.images import mixed_bytes
from vmforge.testing.qemu_tools import (
    assert_reads_as_qemu_img,
    needs_qemu,
    qemu_img,
    vmforge_img,
)
from vmforge_dmg import Dmg
from vmforge_dmg.layout import IGNORE, RAW, ZERO, ZLIB

pytestmark = needs_qemu
MiB = 1 << 20


def _data(seed: int) -> bytearray:
    data = bytearray(mixed_bytes(3 * MiB + 1536, seed=seed, piece=65536))
    data[5000:5003] = b"odd"
    return data


@pytest.mark.parametrize("compression,chunk_size", [("raw", 4096), ("zlib", 65536),
                                                    ("zlib", 1 << 20), ("raw", 1 << 20)])
def test_qemu_img_reads_what_we_write(tmp_path: Path, compression: str,
                                      chunk_size: int) -> None:
    data = _data(chunk_size)
    img = tmp_path / "d.dmg"
    build_dmg(img, data, compression, chunk_size)
    assert_reads_as_qemu_img(Dmg, img, "dmg", data, tmp_path)


def test_every_chunk_type_qemu_img_knows(tmp_path: Path) -> None:
    data = _data(3)
    data[MiB:2 * MiB] = bytes(MiB)

    def kinds(k: int, chunk: bytes) -> int:   # zero, ignore, raw and zlib, side by side
        if not any(chunk):
            return (ZERO, IGNORE)[k % 2]
        return (RAW, ZLIB)[k % 2]

    img = tmp_path / "mix.dmg"
    build_dmg(img, data, chunk_size=65536, chunk_types=kinds)
    assert_reads_as_qemu_img(Dmg, img, "dmg", data, tmp_path)
    rsrc = tmp_path / "rsrc.dmg"   # the tables in an old-style resource fork
    build_dmg(rsrc, data, chunk_size=65536, chunk_types=kinds, resource_fork=True)
    assert_reads_as_qemu_img(Dmg, rsrc, "dmg", data, tmp_path)


@pytest.mark.parametrize("compression", ["bzip2", "lzfse"])
def test_qemu_img_cannot_read_bzip2_or_lzfse_here(tmp_path: Path, compression: str) -> None:
    data = _data(4)
    img = tmp_path / "c.dmg"
    build_dmg(img, data, compression, 65536)
    r = qemu_img("convert", "-f", "dmg", "-O", "raw", str(img), str(tmp_path / "q.raw"),
                 check=False)
    assert r.returncode != 0 and f"dmg-{compression}" in r.stderr, r.stderr
    with Dmg.open(str(img)) as drv:
        assert drv.read(0, drv.size) == data
        assert drv.info().format_specific["chunks"][compression] > 10


def test_convert_to_dmg_with_each_compression(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    data = _data(5)
    data[MiB:2 * MiB] = bytes(MiB)   # a zero chunk
    src.write_bytes(data)
    for compression in ("raw", "zlib", "bzip2", "lzfse"):
        out = tmp_path / f"{compression}.dmg"
        vmforge_img("convert", "-O", "dmg", "-o", f"compression={compression}", str(src),
                    str(out))
        with Dmg.open(str(out)) as drv:
            assert drv.read(0, drv.size) == src.read_bytes()
            kinds = drv.info().format_specific["chunks"]
            assert compression in kinds and "zero" in kinds
        back = tmp_path / "back.raw"
        vmforge_img("convert", "-O", "raw", str(out), str(back))   # probed by content
        assert back.read_bytes() == src.read_bytes()
        if compression in ("raw", "zlib"):
            qemu_img("compare", "-f", "dmg", "-F", "raw", str(out), str(src))
