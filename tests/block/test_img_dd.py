"""``vmforge img dd`` beside ``qemu-img dd``: the same output images (raw and
qcow2, bs/count/skip, count counting skipped blocks, a skip past the end), the
same messages for bad operands, the same exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.testing.qemu_tools import needs_qemu

pytestmark = needs_qemu
VMFORGE = [sys.executable, "-m", "vmforge.cli.main", "img", "--qemu-img-compat", "dd"]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 512k 100k",
                    str(path)], check=True, capture_output=True)
    return path


@pytest.mark.parametrize("args", [
    [],
    ["bs=64k", "skip=2", "count=10"],
    ["bs=1k", "skip=1", "count=3"],
    ["bs=3000"],                            # not a divisor of the size: a short last block
    ["skip=100000"],                        # past the end: reported, empty output
    ["-O", "qcow2", "bs=4k", "count=200"],
])
def test_same_output_as_qemu_img(src: Path, tmp_path: Path, args: list[str]) -> None:
    qemu_img = "qemu-img"
    fmt = args[args.index("-O") + 1] if "-O" in args else "raw"
    ours = _run([*VMFORGE, *args, "if=in.qcow2", "of=ours.img"], tmp_path)
    theirs = _run([qemu_img, "dd", *args, "if=in.qcow2", "of=theirs.img"], tmp_path)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    info = [subprocess.run([qemu_img, "info", "--output", "json", str(tmp_path / n)],
                           capture_output=True, text=True, check=True).stdout
            for n in ("ours.img", "theirs.img")]
    assert '"virtual-size"' in info[0]
    sizes = [line for text in info for line in text.splitlines() if "virtual-size" in line]
    assert sizes[0] == sizes[1] and f'"format": "{fmt}"' in info[0]
    cmp = subprocess.run([qemu_img, "compare", "-f", fmt, "-F", fmt,
                          str(tmp_path / "ours.img"), str(tmp_path / "theirs.img")],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


@pytest.mark.parametrize("args", [
    ["if=in.qcow2"],
    ["if=in.qcow2", "of=x", "bs=0"],
    ["if=in.qcow2", "of=x", "bs=abc"],
    ["if=in.qcow2", "of=x", "count=-1"],
    ["if=in.qcow2", "of=x", "skip=zz"],
    ["if=in.qcow2", "of=x", "foo=1"],
    ["if=in.qcow2", "of=x", "conv=notrunc"],
    ["if=missing", "of=x"],
])
def test_bad_operands_as_qemu_img(src: Path, tmp_path: Path, args: list[str]) -> None:
    qemu_img = "qemu-img"
    ours = _run([*VMFORGE, *args], tmp_path)
    theirs = _run([qemu_img, "dd", *args], tmp_path)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert ours.returncode == 1 and "Traceback" not in ours.stderr
