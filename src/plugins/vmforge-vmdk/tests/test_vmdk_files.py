"""Probing by content, and descriptor files naming their extents by relative and
absolute paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.probe import probe_format
from vmforge_vmdk import Vmdk

MiB = 1 << 20


@pytest.mark.parametrize(("head", "score"), [
    (b"KDMV\x01\0\0\0", 100),
    (b"COWD\x01\0\0\0", 100),
    (b"# Disk DescriptorFile\nversion=1\nCID=1\n", 100),
    (b"# Disk DescriptorFile\r\n  \r\nversion=3\r\n", 100),
    (b"\n", 0),
    (b"version=4\n", 0),
    (b"# a comment\nCID=1\nversion=1\n", 0),
    (b"# no end of line", 0),
    (b"", 0),
    (b"KDM", 0),
])
def test_probe(head: bytes, score: int) -> None:
    assert Vmdk.probe(head, "x") == score


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat",
                                       "twoGbMaxExtentSparse", "streamOptimized"])
def test_probed_among_installed_formats(tmp_path: Path, subformat: str) -> None:
    img = tmp_path / "p.vmdk"
    Vmdk.create(str(img), MiB, subformat=subformat)
    assert probe_format(str(img)) == "vmdk"


def test_extents_relative_to_the_descriptor_not_the_cwd(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dir").mkdir()
    img = tmp_path / "dir" / "r.vmdk"
    Vmdk.create(str(img), 3 * MiB, subformat="twoGbMaxExtentSparse")
    with Vmdk.open(str(img), readonly=False) as drv:
        drv.write(MiB, b"\x42" * 4096)
    monkeypatch.chdir(tmp_path)
    with BlockBackend.open("dir/r.vmdk", "vmdk") as bb:
        assert bb.read(MiB, 4096) == b"\x42" * 4096
    with Vmdk.open("dir/r.vmdk") as drv:
        assert drv.info().format_specific["extents"][0]["filename"] == os.path.join(
            "dir", "r-s001.vmdk")


def test_absolute_extent_paths(tmp_path: Path) -> None:
    img = tmp_path / "a.vmdk"
    Vmdk.create(str(img), 2 * MiB, subformat="monolithicFlat")
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "data.bin"
    os.rename(tmp_path / "a-flat.vmdk", moved)
    img.write_text(img.read_text().replace('"a-flat.vmdk"', f'"{moved}"'))
    with Vmdk.open(str(img), readonly=False) as drv:
        drv.write(512, b"abc")
        assert drv.extents[0].filename == str(moved)
    assert moved.read_bytes()[512:515] == b"abc"
