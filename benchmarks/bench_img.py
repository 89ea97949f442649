"""The block layer: ``vmforge img convert`` and sequential reads, beside qemu-img.

Run (1 GiB, a few minutes)::

    .venv/bin/python -m pytest benchmarks/bench_img.py --benchmark-columns=mean,min,rounds

``VMFORGE_BENCH_SIZE`` sets the image size (default 1G; 8M under
``--benchmark-disable``, as in ``make test``), ``VMFORGE_BENCH_ROUNDS`` the
rounds (default 3) and ``VMFORGE_BENCH_CACHE`` where the input images are kept
(default ``~/.cache/vmforge/bench``): one mixed image (a third random, a third
zeros, a third text, in 64 KiB pieces) built once as raw, its qcow2 copy made
by qemu-img, and a dense raw copy (the zeros written: found only by scanning the
data, as in an image a guest zeroed).  ``extra_info.bytes_per_s`` is virtual bytes per second.
``dissect.hypervisor`` (PyPI) is read beside vmforge when it is installed.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vmforge.block import BlockBackend, parse_size
from vmforge.testing.oracles import needs, require_module

QEMU_IMG = shutil.which("qemu-img")
pytestmark = needs("qemu-img", package="qemu-utils")
VMFORGE = [sys.executable, "-m", "vmforge.cli.main", "img"]
_TEXT = b"The quick brown fox jumps over the lazy dog. vmforge block layer benchmark.\n"
PIECE = 65536


def _size(config: pytest.Config) -> int:
    default = "8M" if config.getoption("benchmark_disable", False) else "1G"
    return parse_size(os.environ.get("VMFORGE_BENCH_SIZE", default))


def _rounds(config: pytest.Config) -> int:
    return 1 if config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "3"))


def _build_mixed(path: Path, size: int) -> None:
    rng = random.Random(11)
    text = (_TEXT * (PIECE // len(_TEXT) + 1))[:PIECE]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.truncate(size)
        for off in range(0, size, PIECE):
            kind = rng.randrange(3)
            n = min(PIECE, size - off)
            if kind == 0:
                f.seek(off)
                f.write(rng.randbytes(n))
            elif kind == 1:
                f.seek(off)
                f.write(text[:n])
    tmp.rename(path)


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest, compiled: None) -> dict[str, str]:
    """The cached mixed image as raw and qcow2, built on first use."""
    size = _size(request.config)
    cache = Path(os.environ.get("VMFORGE_BENCH_CACHE",
                                Path.home() / ".cache" / "vmforge" / "bench"))
    cache.mkdir(parents=True, exist_ok=True)
    raw = cache / f"mixed-{size}.raw"
    qcow2 = cache / f"mixed-{size}.qcow2"
    if not raw.exists():
        _build_mixed(raw, size)
    if not qcow2.exists():
        subprocess.run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", str(raw),
                        str(qcow2) + ".tmp"], check=True)
        os.rename(str(qcow2) + ".tmp", qcow2)
    dense = cache / f"mixed-{size}-dense.raw"    # its zeros written out: no holes to skip
    if not dense.exists():
        with open(raw, "rb") as src, open(str(dense) + ".tmp", "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        os.rename(str(dense) + ".tmp", dense)
    return {"raw": str(raw), "qcow2": str(qcow2), "dense": str(dense), "size": str(size)}


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _convert_cmd(tool: str, args: list[str]) -> list[str]:
    return ([QEMU_IMG, "convert"] if tool == "qemu-img" else [*VMFORGE, "convert"]) + args


def _bench(benchmark, rate, request: pytest.FixtureRequest, fn: Callable[[], object],
           setup: Callable[[], None] | None, size: int) -> None:
    benchmark.pedantic(fn, setup=setup, rounds=_rounds(request.config), iterations=1)
    rate(size, "bytes")


CONVERSIONS = {
    "raw-to-qcow2": ("raw", ["-f", "raw", "-O", "qcow2"], "qcow2"),
    "qcow2-to-raw": ("qcow2", ["-f", "qcow2", "-O", "raw"], "raw"),
    "raw-to-qcow2-compressed": ("raw", ["-f", "raw", "-O", "qcow2", "-c"], "qcow2"),
    # the same data with its zeros written, not sparse: found by scanning the data
    "dense-raw-to-qcow2": ("dense", ["-f", "raw", "-O", "qcow2"], "qcow2"),
}


@pytest.mark.parametrize("tool", ["vmforge", "qemu-img"])
@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_convert(benchmark, rate, request, images, tmp_path, tool: str, case: str) -> None:
    src_kind, flags, ext = CONVERSIONS[case]
    if tool == "vmforge":
        pytest.importorskip("vmforge_qcow2")
    dst = tmp_path / f"out.{ext}"

    def setup() -> None:
        dst.unlink(missing_ok=True)
        # start every round with no dirty pages left by the one before (the kernel's
        # writeback of the other tool's output would otherwise be charged to this one)
        os.sync()

    benchmark.group = f"convert {case}"
    _bench(benchmark, rate, request, lambda: _run(_convert_cmd(tool, [*flags, images[src_kind],
                                                                str(dst)])),
           setup, int(images["size"]))
    _run([QEMU_IMG, "compare", "-f", "qcow2" if src_kind == "qcow2" else "raw", "-F", ext,
          images[src_kind], str(dst)])


def _read_vmforge(path: str, fmt: str) -> int:
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    with BlockBackend.open(path, fmt) as bb:
        for off in range(0, bb.size, len(buf)):
            n = min(len(buf), bb.size - off)
            bb.readinto(off, mv[:n])
        return bb.size


def _read_qemu_io(path: str, fmt: str, size: int) -> None:
    step = 64 << 20
    cmds = []
    for off in range(0, size, step):
        cmds += ["-c", f"read -q {off} {min(step, size - off)}"]
    _run(["qemu-io", "-r", "-f", fmt, *cmds, path])


def _read_dissect(path: str, size: int) -> None:
    from dissect.hypervisor.disk.qcow2 import QCow2

    with open(path, "rb") as fh:
        stream = QCow2(fh).open()
        for _ in range(0, size, 1 << 20):
            stream.read(1 << 20)


@pytest.mark.parametrize("reader", ["vmforge-raw", "vmforge-qcow2", "qemu-io-qcow2",
                                    "dissect-qcow2"])
def test_sequential_read(benchmark, rate, request, images, reader: str) -> None:
    size = int(images["size"])
    if reader == "vmforge-qcow2":
        pytest.importorskip("vmforge_qcow2")
    if reader == "dissect-qcow2":
        require_module("dissect.hypervisor", "pip install dissect.hypervisor (the test extra)")
    fns: dict[str, Callable[[], object]] = {
        "vmforge-raw": lambda: _read_vmforge(images["raw"], "raw"),
        "vmforge-qcow2": lambda: _read_vmforge(images["qcow2"], "qcow2"),
        "qemu-io-qcow2": lambda: _read_qemu_io(images["qcow2"], "qcow2", size),
        "dissect-qcow2": lambda: _read_dissect(images["qcow2"], size),
    }
    benchmark.group = "sequential read (1 MiB reads)"
    _bench(benchmark, rate, request, fns[reader], None, size)
