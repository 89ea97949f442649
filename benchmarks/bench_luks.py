"""LUKS ``convert`` both ways, ``vmforge img`` beside ``qemu-img``, whole processes.

Run (64 MiB and 512 MiB, a few minutes)::

    .venv/bin/python -m pytest benchmarks/bench_luks.py --benchmark-columns=min,mean,rounds

The same mixed image (random, zero and text pieces of 64 KiB,
:func:`vmforge.testing.images.mixed_bytes`) in raw, and as LUKS1 with qemu-img's
defaults (aes-256-xts-plain64, sha256) made by ``qemu-img convert``. Then:

- ``luks->raw``: each tool converts that LUKS image to raw;
- ``raw->luks``: each tool converts the raw image to a new LUKS image (its defaults,
  ``iter-time=10`` for both: the key slot's PBKDF2 is calibrated to 10 ms by each,
  as ``qemu-img`` does with its default of 2000 ms).

The outputs are checked (raw: byte for byte; LUKS: ``qemu-img compare`` with the
secret). ``extra_info`` holds ``bytes_per_s`` (virtual bytes per second, mean
time) and ``cpu_s``, the least user+system CPU seconds of the child over the
rounds (steadier than wall time on a shared machine).

``VMFORGE_BENCH_LUKS_SIZES`` sets the sizes (default ``64M,512M``; 4M under
``--benchmark-disable``), ``VMFORGE_BENCH_ROUNDS`` the rounds (default 3). The
files live in ``/dev/shm`` when it exists.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmforge.block import parse_size
from vmforge.testing import qemu_tools
from vmforge.testing.images import mixed_bytes
from vmforge.testing.oracles import needs

pytestmark = needs("qemu-img", package="qemu-utils")

QEMU_IMG = shutil.which("qemu-img") or "qemu-img"
VMFORGE = [sys.executable, "-m", "vmforge.cli.main", "img"]
SECRET = "secret,id=sec0,data=bench-secret"
CREATE = ["--object", SECRET, "-o", "key-secret=sec0,iter-time=10"]


def _sizes() -> list[str]:
    return os.environ.get("VMFORGE_BENCH_LUKS_SIZES", "64M,512M").split(",")


def _rounds(config: pytest.Config) -> int:
    return 1 if config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "3"))


def _opts(path: Path) -> list[str]:
    return ["--object", SECRET, "--image-opts",
            f"driver=luks,key-secret=sec0,file.filename={path}"]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="vmforge-bench-luks-", dir=base) as d:
        yield Path(d)


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest, workdir: Path) -> Callable[[str], tuple[Path, Path]]:
    """``images(size)``: the raw image and its LUKS copy (by qemu-img), made once."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(size: str) -> tuple[Path, Path]:
        if size not in made:
            n = parse_size("4M" if request.config.getoption("benchmark_disable", False)
                           else size)
            raw, luks = workdir / f"in-{size}.raw", workdir / f"in-{size}.luks"
            raw.write_bytes(mixed_bytes(n))
            qemu_tools.qemu_img("convert", "-f", "raw", "-O", "luks", *CREATE, str(raw),
                                str(luks))
            made[size] = raw, luks
        return made[size]

    return get


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@pytest.mark.parametrize("tool", ["vmforge", "qemu-img"])
@pytest.mark.parametrize("direction", ["luks->raw", "raw->luks"])
@pytest.mark.parametrize("size", _sizes())
def test_luks_convert(benchmark, rate, compiled, request, images, workdir: Path, size: str,
                      direction: str, tool: str) -> None:
    raw, luks = images(size)
    prog = [*VMFORGE, "convert"] if tool == "vmforge" else [QEMU_IMG, "convert"]
    out = workdir / f"out-{tool}.{'raw' if direction == 'luks->raw' else 'luks'}"
    if direction == "luks->raw":
        cmd = [*prog, *_opts(luks), "-O", "raw", str(out)]
    else:
        cmd = [*prog, "-f", "raw", "-O", "luks", *CREATE, str(raw), str(out)]
    cpu: list[float] = []

    def run() -> None:
        before = _child_cpu()
        qemu_tools.run_quietly(cmd)   # (retries qemu-img's PBKDF2 timing flake)
        cpu.append(_child_cpu() - before)

    benchmark.group = f"convert {direction} {size} (whole process)"
    benchmark.pedantic(run, setup=lambda: out.unlink(missing_ok=True),
                       rounds=_rounds(request.config), iterations=1)
    rate(raw.stat().st_size, "bytes")
    benchmark.extra_info["cpu_s"] = round(min(cpu), 3)
    if direction == "luks->raw":
        assert out.read_bytes() == raw.read_bytes()
    else:
        qemu_tools.qemu_img("compare", *_opts(out), f"driver=raw,file.filename={raw}")
