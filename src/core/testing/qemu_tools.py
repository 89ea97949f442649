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

Checks most formats' tests make, written once: :func:`assert_reads_as_qemu_img`
(images only a test can build), :func:`assert_plain_data_reads_as_image` (the
extents convert reads from the file), :func:`write_odd_patterns` and
:func:`assert_qemu_accepts` (images vmforge wrote, read and written by qemu),
:func:`qcow2_source` and :func:`assert_converts_back`,
:func:`assert_raw_converts_both_ways`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmforge.block.driver import BlockDriver
from vmforge.testing.oracles import needs

__all__ = ["assert_converts_back", "assert_plain_data_reads_as_image", "assert_qemu_accepts",
           "assert_raw_converts_both_ways",
           "assert_reads_as_qemu_img", "info_json", "needs_qemu", "pattern", "qcow2_source",
           "qemu_img", "qemu_io", "run", "run_quietly", "to_raw", "vmforge_img",
           "write_odd_patterns"]

#: the mark of tests that run qemu-img and qemu-io (Debian package qemu-utils)
needs_qemu = needs("qemu-img", "qemu-io", package="qemu-utils")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured as text (``check``: raise on failure)."""
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


#: qemu-img's PBKDF2 benchmark (luks) fails now and then on a busy host: the
#: oracle's flake, retried, never vmforge's failure
_PBKDF_FLAKE = "Unable to get accurate CPU usage"
#: the pauses before each retry, seconds (a loaded host can fail it several times in a row)
_PBKDF_PAUSES = (0.1, 0.3, 1.0, 2.0, 3.0, 5.0)


def _retry_pbkdf_flake(attempt: Callable[[], subprocess.CompletedProcess[str]],
                       ) -> subprocess.CompletedProcess[str]:
    r = attempt()
    for pause in _PBKDF_PAUSES:
        if _PBKDF_FLAKE not in (r.stderr or ""):
            break
        time.sleep(pause)
        r = attempt()
    return r


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``qemu-img ARGS`` (retried a few times when its PBKDF2 timing fails)."""
    r = _retry_pbkdf_flake(lambda: run("qemu-img", *args, check=False))
    if check and r.returncode:
        raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
    return r


def run_quietly(cmd: list[str]) -> None:
    """Run ``cmd`` (a benchmark's timed command) with its output discarded; raise with
    its stderr when it fails. qemu-img's PBKDF2 timing flake is retried as in
    :func:`qemu_img`."""
    r = _retry_pbkdf_flake(lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True))
    if r.returncode:
        raise subprocess.CalledProcessError(r.returncode, r.args, None, r.stderr)


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


def assert_plain_data_reads_as_image(cls: type[BlockDriver], fmt: str, workdir: Path,
                                     opts: str = "", some: bool = True) -> None:
    """An image qemu-img makes of seeded data with zeros in and across blocks (``-o
    opts``): wherever the driver's ``plain_data_fd`` names a file for a data extent of
    its block status, the bytes at the extent's host offset there are what the image
    reads (``convert`` reads them there instead of mapping the range again); zeros and
    compressed data name none; with ``some``, at least one extent names a file."""
    import os

    from vmforge.block.driver import BlockStatus

    raw, img = workdir / "plain.raw", workdir / f"plain.{fmt}"
    data = bytearray(random.Random(7).randbytes(6 * MiB))
    data[MiB:2 * MiB + 4096] = bytes(MiB + 4096)       # zeros, in and across blocks
    data[4 * MiB:5 * MiB] = bytes(MiB)
    raw.write_bytes(data)
    qemu_img("convert", "-f", "raw", "-O", fmt, *(["-o", opts] if opts else []),
             str(raw), str(img))
    with cls.open(str(img)) as drv:
        plain_data_fd = getattr(drv, "plain_data_fd", None)    # (an optional method)
        assert plain_data_fd is not None, f"{cls.__name__} has no plain_data_fd"
        plain = 0
        for e in drv.block_status(0, drv.size):
            fd = plain_data_fd(e)
            if e.is_data and not e.status & BlockStatus.COMPRESSED and e.host_offset is not None:
                assert fd is not None, e
                got = os.pread(fd, e.length, e.host_offset)
                assert got + bytes(e.length - len(got)) == drv.read(e.offset, e.length)
                plain += 1
            else:
                assert fd is None, e
        assert plain > 0 or not some


# -- the checks a writable format's tests make against qemu ---------------------------------

MiB = 1 << 20


def write_odd_patterns(drv: BlockDriver) -> bytearray:
    """Write seeded patterns at odd offsets and lengths (inside and across clusters, up
    to the last byte; the image at least 8 MiB) into a new image; its contents now."""
    model = bytearray(drv.size)
    for k, (off, n) in enumerate(((0, 1), (4095, 70001), (2 * MiB - 7, 20),
                                  (6 * MiB + 3, 3 * MiB // 2), (drv.size - 5, 5))):
        data = pattern(n, k)
        drv.write(off, data)
        model[off:off + n] = data
    return model


def assert_qemu_accepts(img: str | Path, fmt: str, model: bytearray, marked: int,
                        workdir: Path) -> None:
    """An image vmforge wrote: qemu-img compares it equal to ``model``, qemu-io reads
    the 512 bytes of 0x5a written at ``marked``, then writes 1 KiB of 0x77 at
    4 MiB + 512 into it (``model`` updated to match, for the test to read back)."""
    model_path = workdir / "model.raw"
    model_path.write_bytes(model)
    assert qemu_img("compare", "-f", fmt, "-F", "raw", str(img), str(model_path)).returncode == 0
    assert "Pattern verification failed" not in qemu_io(img, f"read -P 0x5a {marked} 512",
                                                        fmt=fmt)
    qemu_io(img, f"write -P 0x77 {4 * MiB + 512} 1024", fmt=fmt)
    model[4 * MiB + 512:4 * MiB + 1536] = b"\x77" * 1024


def qcow2_source(workdir: Path) -> Path:
    """A 6 MiB qcow2 image qemu wrote (data, a zeroed range, the last KiB): what the
    conversion tests convert from."""
    src = workdir / "src.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(src), "6M")
    qemu_io(src, "write -P 0x61 0 100000", "write -P 0x62 3M 1M", "write -z 4M 64k",
            "write -P 0x63 6143k 1k", fmt="qcow2")
    return src


def assert_converts_back(img: str | Path, fmt: str, src: Path, workdir: Path) -> None:
    """``img`` (converted from ``src`` by vmforge) converts by vmforge to qcow2 and to
    raw, each comparing equal, for qemu-img, to ``img`` and to ``src``."""
    for out_fmt in ("qcow2", "raw"):
        back = workdir / f"back.{out_fmt}"
        vmforge_img("convert", "-f", fmt, "-O", out_fmt, str(img), str(back))
        assert qemu_img("compare", "-f", fmt, "-F", out_fmt, str(img),
                        str(back)).returncode == 0
        assert qemu_img("compare", "-f", "qcow2", "-F", out_fmt, str(src),
                        str(back)).returncode == 0


def assert_raw_converts_both_ways(fmt: str, suffix: str, workdir: Path) -> None:
    """A raw image converted by vmforge is what qemu-img compares equal and checks
    clean; qemu-img's conversion converts back by vmforge to the same bytes."""
    src = workdir / "src.raw"
    src.write_bytes(pattern(3 * MiB, 9) + bytes(2 * MiB) + pattern(MiB, 10))
    ours = workdir / f"ours.{suffix}"
    vmforge_img("convert", "-O", fmt, str(src), str(ours))
    qemu_img("compare", "-f", fmt, "-F", "raw", str(ours), str(src))
    assert qemu_img("check", "-f", fmt, str(ours), check=False).returncode == 0
    theirs = workdir / f"theirs.{suffix}"
    qemu_img("convert", "-O", fmt, str(src), str(theirs))
    back = workdir / "back.raw"
    vmforge_img("convert", "-O", "raw", str(theirs), str(back))
    assert back.read_bytes() == src.read_bytes()
