"""Writes of zeros lay the file out as QEMU 7.2 does (byte for byte beside qemu-io
``write -z`` and ``qemu-img convert -n``): on a v3 image an unallocated cluster the
write covers gets the zero flag (QEMU's zero_in_l2_slice), a partial write on a
cluster that already reads as zeros is widened to the whole cluster
(qcow2_co_pwrite_zeroes), and a discard leaves unallocated clusters alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qcow2_oracle import needs_qemu

from vmforge.block import BlockBackend, parse_size

pytestmark = needs_qemu
MiB = 1 << 20


def _fresh(tmp_path: Path, *opts: str) -> tuple[Path, Path]:
    theirs, ours = tmp_path / "q.qcow2", tmp_path / "v.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, str(theirs), "4M"],
                   check=True)
    shutil.copyfile(theirs, ours)
    return theirs, ours


@pytest.mark.parametrize("offset,length", [("0", "4M"), ("0", "4k"), ("100k", "8k"),
                                           ("4092k", "4k"), ("60k", "72k")])
@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_write_zeroes_as_qemu_io(tmp_path: Path, offset: str, length: str,
                                 compat: str) -> None:
    theirs, ours = _fresh(tmp_path, "-o", f"compat={compat}")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 64k",
                    "-c", f"write -z {offset} {length}", str(theirs)],
                   check=True, capture_output=True)
    with BlockBackend.open(str(ours), "qcow2", readonly=False) as bb:
        bb.write(MiB, b"\7" * 65536)
        bb.write_zeroes(parse_size(offset), parse_size(length))
    if compat == "1.1":
        assert ours.read_bytes() == theirs.read_bytes()
        return
    # v2 has no zero flag: QEMU frees a covered cluster (zeroize turns into discard);
    # the same map and a clean image, but vmforge also zeroes the freed bytes where
    # QEMU leaves the old data in the file
    maps = [subprocess.run(["qemu-img", "map", "--output", "json", str(p)], check=True,
                           capture_output=True, text=True).stdout for p in (theirs, ours)]
    assert maps[0] == maps[1]
    subprocess.run(["qemu-img", "check", str(ours)], check=True, capture_output=True)


def test_convert_n_as_qemu_img(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(src), "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 1 1M 64k", str(src)],
                   check=True, capture_output=True)
    theirs, ours = _fresh(tmp_path)
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(src),
                    str(theirs)], check=True)
    subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "convert", "-n", "-f",
                    "raw", "-O", "qcow2", str(src), str(ours)], check=True)
    assert ours.read_bytes() == theirs.read_bytes()
