"""A format may declare a trailer's magic (``FORMAT.end-N.HEX`` in the entry-point
group ``vmforge.block.magic``): probing then imports its probe module only for a file
whose last N bytes start with HEX (or that is too short to tell), as for magics at an
offset from the start (tests/block/test_probe_magic.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.block.test_probe_magic import _dist  # (a fake format distribution)
from vmforge.block.probe import may_claim, read_tail
from vmforge.plugins import Registry

KOLY = bytes.fromhex("6b6f6c790000000400000200")     # dmg's trailer: "koly", version 4, 512


def test_registry_reads_trailer_magics(tmp_path: Path) -> None:
    _dist(tmp_path, "fmta", [f"fmta.end-512.{KOLY.hex()}", "fmta.0.4142"])
    _dist(tmp_path, "fmtb", ["fmtb.end-0.41"])             # malformed: asked always
    _dist(tmp_path, "fmtc", ["fmtc.end--4.41"])
    _dist(tmp_path, "fmtd", ["fmtd.end-2.414243"])         # 3 bytes in the last 2
    _dist(tmp_path, "fmte", ["fmte.end-3.414243"])
    reg = Registry(path=[str(tmp_path)])
    assert sorted(reg.probe_magics("fmta") or []) == [(-512, KOLY), (0, b"AB")]
    for name in ("fmtb", "fmtc", "fmtd"):
        assert reg.probe_magics(name) is None, name
    assert reg.probe_magics("fmte") == [(-3, b"ABC")]


def test_may_claim_with_a_trailer() -> None:
    magics = [(-512, KOLY)]
    tail = KOLY + bytes(500)
    assert may_claim(b"", magics, tail)
    assert may_claim(b"", magics, b"x" * 100 + tail)        # more than the last 512 read
    assert not may_claim(b"", magics, bytes(512))
    assert may_claim(b"", magics, KOLY)                      # too short to tell
    assert may_claim(b"", magics)                            # tail not known
    assert may_claim(b"", magics, None)
    assert not may_claim(b"AX", [(-2, b"Z"), (0, b"AB")], b"YZ")
    assert may_claim(b"AX", [(-2, b"Y"), (0, b"AB")], b"YZ")
    assert may_claim(b"AB", [(-2, b"Z"), (0, b"AB")], b"YZ")


def test_read_tail(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 4)
    assert read_tail(str(path), 3) == bytes([253, 254, 255])
    assert read_tail(str(path), 5000) == bytes(range(256)) * 4
    assert read_tail(str(tmp_path / "missing"), 512) is None
    assert read_tail(str(tmp_path), 512) is None             # a directory


def test_the_dmg_probe_claims_only_files_with_its_trailer(tmp_path: Path) -> None:
    """The declaration dmg can make (``dmg.end-512.<koly>``) hides no claim of its probe."""
    probe = pytest.importorskip("vmforge_dmg.probe").probe
    cases = [bytes(2048), bytes(1536) + KOLY + bytes(500), bytes(100), KOLY + bytes(500),
             bytes(1536) + KOLY[:8] + b"\0" * 504, b"koly" * 200, bytes(511) + KOLY]
    path = tmp_path / "x"
    for data in cases:
        path.write_bytes(data)
        if probe(data[:512], str(path)) > 0:
            assert may_claim(data[:512], [(-512, KOLY)], read_tail(str(path), 512)), data[-512:]


_PROBE = """
import sys
from vmforge.block.probe import probe_format
print(probe_format(sys.argv[1]), "trailfmt.probe" in sys.modules)
"""


def test_probing_imports_a_trailer_format_only_for_its_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "trailfmt", [f"trailfmt.end-512.{KOLY.hex()}"])
    (site / "trailfmt").mkdir()
    (site / "trailfmt" / "__init__.py").write_text("")
    (site / "trailfmt" / "probe.py").write_text(
        "def probe(header, filename):\n"
        "    with open(filename, 'rb') as f:\n"
        "        data = f.read()\n"
        "    return 200 if data[-512:].startswith(bytes.fromhex('6b6f6c79')) else 0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), os.environ.get("PYTHONPATH", "")]),
        "VMFORGE_CACHE": str(tmp_path / "cache")}
    plain, trailed = tmp_path / "plain.img", tmp_path / "trailed.img"
    plain.write_bytes(bytes(4096))
    trailed.write_bytes(bytes(3584) + KOLY + bytes(500))

    def probe(path: Path) -> str:
        return subprocess.run([sys.executable, "-c", _PROBE, str(path)], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert probe(plain) == "raw False"
    assert probe(trailed) == "trailfmt True"
