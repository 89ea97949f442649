"""Vmdk's block status against its ``plain_data_fd``: where it names a file, the
bytes at the extent's host offset there are what the image reads (``convert`` reads
them there, mapping each range once); zeros, compressed grains get no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmforge.testing.qemu_tools import assert_plain_data_reads_as_image, needs_qemu
from vmforge_vmdk import Vmdk

pytestmark = needs_qemu


@pytest.mark.parametrize("opts", ["",
                                 "subformat=monolithicFlat",
                                 "subformat=twoGbMaxExtentSparse",
                                 "subformat=streamOptimized"])
def test_plain_data_reads_as_the_image(tmp_path: Path, opts: str) -> None:
    # (streamOptimized: every grain compressed, none read in place)
    assert_plain_data_reads_as_image(Vmdk, "vmdk", tmp_path, opts,
                                     some=opts != "subformat=streamOptimized")
