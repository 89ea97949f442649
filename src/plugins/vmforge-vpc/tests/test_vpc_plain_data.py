"""Vpc's block status against its ``plain_data_fd``: where it names a file, the
bytes at the extent's host offset there are what the image reads (``convert`` reads
them there, mapping each range once); zeros get no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmforge.testing.qemu_tools import assert_plain_data_reads_as_image, needs_qemu
from vmforge_vpc import Vpc

pytestmark = needs_qemu


@pytest.mark.parametrize("opts", ["", "subformat=fixed"])
def test_plain_data_reads_as_the_image(tmp_path: Path, opts: str) -> None:
    assert_plain_data_reads_as_image(Vpc, "vpc", tmp_path, opts)
