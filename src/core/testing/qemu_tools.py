"""qemu-img and qemu-io as a disk format's oracle, and the ``vmforge img`` command.

For a format plugin's tests that compare with QEMU's tools::

    from functools import partial
    from vmforge.testing import qemu_tools
    from vmforge.testing.qemu_tools import info_json, needs_qemu, qemu_img, vmforge_img

    pytestmark = needs_qemu                      # skipped without qemu-utils; fails in CI
    qemu_io = partial(qemu_tools.qemu_io, fmt="myfmt")
    to_raw = partial(qemu_tools.to_raw, fmt="myfmt")

:data:`needs_qemu` is a :func:`vmforge.testing.oracles.needs` mark, so a
missing qemu-img skips the tests, or fails them in CI, as every other oracle.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from vmforge.block.driver import BlockDriver
from vmforge.testing.oracles import needs

__all__ = ["assert_reads_as_qemu_img", "info_json", "needs_qemu", "pattern", "qemu_img",
           "qemu_io", "run", "to_raw", "vmforge_img"]

#: the mark of tests that run qemu-img and qemu-io (Debian package qemu-utils)
needs_qemu = needs("qemu-img", "qemu-io", package="qemu-utils")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured as text (``check``: raise on failure)."""
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``qemu-img ARGS``."""
    return run("qemu-img", *args, check=check)


def vmforge_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``vmforge img ARGS``, with this interpreter."""
    return run(sys.executable, "-m", "vmforge.cli.main", "img", *args, check=check)


def qemu_io(path: str | Path, *cmds: str, fmt: str) -> str:
    """Run qemu-io's commands ``cmds`` on the image (``-f fmt``); its output, which
    must not report an error or a failure."""
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    p = run(*args, str(path))
    assert "error" not in p.stdout.lower() and "fail" not in p.stdout.lower(), p.stdout
    return p.stdout


def info_json(tool: str, path: str | Path, fmt: str) -> dict[str, Any]:
    """``info --output json`` of ``tool`` (``"qemu-img"``, else vmforge's)."""
    fn = qemu_img if tool == "qemu-img" else vmforge_img
    result: dict[str, Any] = json.loads(
        fn("info", "--output", "json", "-f", fmt, str(path)).stdout)
    return result


def to_raw(path: str | Path, out: str | Path, fmt: str) -> bytes:
    """The image's contents as qemu-img converts them to raw (written to ``out``)."""
    qemu_img("convert", "-f", fmt, "-O", "raw", str(path), str(out))
    return Path(out).read_bytes()


def pattern(n: int, seed: int) -> bytes:
    """``n`` seeded random bytes."""
    return random.Random(seed).randbytes(n)


def assert_reads_as_qemu_img(cls: type[BlockDriver], img: str | Path, fmt: str,
                             expect: bytes | bytearray, workdir: Path) -> None:
    """For images qemu-img reads but no tool writes (made by a test's builder):
    the driver reads ``img`` as ``expect`` and as qemu-img converts it, its zero
    extents are zeros, ``vmforge img info`` agrees with qemu-img's (both
    probing the format), and an image vmforge converts to qcow2 compares equal
    with qemu-img."""
    out = workdir / "q.raw"
    qemu_img("convert", "-f", fmt, "-O", "raw", str(img), str(out))
    with cls.open(str(img)) as drv:
        assert drv.read(0, drv.size) == out.read_bytes() == expect
        for e in drv.block_status(0, drv.size):
            if e.is_zero:
                assert not any(expect[e.offset:e.end])
    theirs = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    ours = json.loads(vmforge_img("info", "--output", "json", str(img)).stdout)
    for key in ("format", "virtual-size", "actual-size", "cluster-size"):
        assert ours.get(key) == theirs.get(key), key
    qcow2 = workdir / "c.qcow2"
    vmforge_img("convert", "-f", fmt, "-O", "qcow2", str(img), str(qcow2))
    qemu_img("compare", "-f", fmt, "-F", "qcow2", str(img), str(qcow2))
