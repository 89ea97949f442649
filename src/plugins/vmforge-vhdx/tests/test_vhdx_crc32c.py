"""The CRC-32C every vhdx header, region table and log entry is checked with: the
``crc32c`` package's function, loaded without the package's ``__init__`` (which
reads its version through ``importlib.metadata`` and imports its command line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import crc32c as package

from vmforge_vhdx.layout import checksum, crc32c


def test_same_values_as_the_package() -> None:
    for data in (b"", b"123456789", bytes(4096), bytes(range(256)) * 17):
        assert crc32c(data) == package.crc32c(data)
        assert crc32c(data[7:], crc32c(data[:7])) == package.crc32c(data)
    assert crc32c(b"123456789") == 0xE3069283          # the check value of CRC-32C
    assert checksum(bytearray(b"head\xff\xff\xff\xff" + bytes(8))) == package.crc32c(
        b"head" + bytes(12))


def test_opening_a_vhdx_imports_neither_the_package_nor_importlib_metadata(
        tmp_path: Path) -> None:
    """(nor importlib.util: dropped first, as a dev install's finders import it)"""
    img = tmp_path / "a.vhdx"
    code = f"""
import sys
sys.modules.pop("importlib.util", None)
from vmforge.block.backend import BlockBackend, create_image
create_image("vhdx", {str(img)!r}, 8 << 20)
with BlockBackend.open({str(img)!r}, "vhdx", readonly=False) as bb:
    bb.write(0, b"x" * 4096)
with BlockBackend.open({str(img)!r}, "vhdx") as bb:
    assert bb.read(0, 4096) == b"x" * 4096
print(sorted(m for m in sys.modules if m in ("crc32c", "importlib.util")
             or m.startswith("importlib.metadata")))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
