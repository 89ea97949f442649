"""Every disk format: sequential read and ``convert`` to raw, beside qemu-img and dissect.

Run (64 MiB per image, a few minutes)::

    .venv/bin/python -m pytest benchmarks/bench_formats.py --benchmark-columns=mean,min,rounds

For each format the same mixed image (random, zero and text pieces of 64 KiB,
:func:`vmforge.testing.images.mixed_bytes`) is made once: the writable formats by
``qemu-img convert`` from raw (luks with a secret), dmg, bochs and cloop by the
builders of their plugins' tests (no Debian tool writes them).  Then:

- ``convert FMT->raw``: ``vmforge img convert`` and ``qemu-img convert``, whole
  processes, as a user times them (start-up included);
- ``read FMT``: the whole disk in 1 MiB reads through vmforge's
  :class:`~vmforge.block.BlockBackend` (in this process), through ``qemu-io``
  (a process: ``read`` commands of 64 MiB) and through ``dissect.hypervisor``
  (pure Python, in this process) for the formats it reads.

``VMFORGE_BENCH_FORMAT_SIZE`` sets the size (default 64M; 4M under
``--benchmark-disable``), ``VMFORGE_BENCH_ROUNDS`` the rounds (default 3).  The
images live in a temporary folder on ``/dev/shm`` when it exists (no disk in
the figures).  ``extra_info.bytes_per_s`` is virtual bytes per second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from vmforge.block import BlockBackend, parse_size
from vmforge.testing import qemu_tools
from vmforge.testing.images import mixed_bytes
from vmforge.testing.oracles import needs, require_module

pytestmark = needs("qemu-img", "qemu-io", package="qemu-utils")

QEMU_IMG = shutil.which("qemu-img") or "qemu-img"
VMFORGE = [sys.executable, "-m", "vmforge.cli.main", "img"]
PLUGINS = Path(__file__).resolve().parent.parent / "src" / "plugins"
PASSPHRASE = "bench-secret"
SECRET = f"secret,id=sec0,data={PASSPHRASE}"

#: formats qemu-img writes (made from raw by it); read-only ones built by the tests' builders
WRITABLE = ("raw", "qcow2", "qcow", "qed", "vdi", "vpc", "vhdx", "vmdk", "parallels", "luks")
READ_ONLY = ("dmg", "bochs", "cloop")
FORMATS = WRITABLE + READ_ONLY


def _size(config: pytest.Config) -> int:
    default = "4M" if config.getoption("benchmark_disable", False) else "64M"
    return parse_size(os.environ.get("VMFORGE_BENCH_FORMAT_SIZE", default))


def _rounds(config: pytest.Config) -> int:
    return 1 if config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "3"))


def _test_helper(plugin: str, module: str) -> ModuleType:
    """A plugin's test helper module (``src/plugins/<plugin>/tests/<module>.py``)."""
    path = PLUGINS / plugin / "tests" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{module}", path)
    if spec is None or spec.loader is None:
        pytest.skip(f"{path} is not there (an installed vmforge without its sources)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _source_args(tool: str, fmt: str, path: str) -> list[str]:
    """How ``tool`` is told to open ``path`` as ``fmt`` (luks: a secret object)."""
    if fmt == "luks":
        return ["--object", SECRET, "--image-opts",
                f"driver=luks,key-secret=sec0,file.filename={path}"]
    return ["-f", fmt, path]


def _make(fmt: str, raw: Path, data: bytes, out: Path) -> None:
    if fmt == "raw":
        shutil.copyfile(raw, out)
    elif fmt in WRITABLE:
        opts = ["-o", "key-secret=sec0,iter-time=10", "--object", SECRET] if fmt == "luks" else []
        # (qemu_tools retries qemu-img's luks PBKDF2 timing when a busy host fails it)
        qemu_tools.qemu_img("convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(out))
    elif fmt == "dmg":
        _test_helper("vmforge-dmg", "dmg_images").build_dmg(out, data)
    elif fmt == "bochs":
        _test_helper("vmforge-bochs", "bochs_images").build_bochs(out, data)
    else:
        _test_helper("vmforge-cloop", "cloop_images").build_cloop(out, data)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="vmforge-bench-", dir=base) as d:
        yield Path(d)


@pytest.fixture(scope="module")
def mixed(request: pytest.FixtureRequest, workdir: Path) -> tuple[Path, bytes]:
    data = mixed_bytes(_size(request.config))
    raw = workdir / "mixed.raw"
    raw.write_bytes(data)
    return raw, data


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest, compiled: None, workdir: Path,
          mixed: tuple[Path, bytes]) -> Callable[[str], str]:
    """``image(fmt)``: the mixed image in format ``fmt``, made on first use."""
    made: dict[str, str] = {}

    def get(fmt: str) -> str:
        pytest.importorskip(f"vmforge_{fmt}")
        if fmt not in made:
            out = workdir / f"image.{fmt}"
            _make(fmt, mixed[0], mixed[1], out)
            made[fmt] = str(out)
        return made[fmt]

    return get


def _bench(benchmark, rate, request: pytest.FixtureRequest, fn: Callable[[], object],
           setup: Callable[[], None] | None, size: int) -> None:
    benchmark.pedantic(fn, setup=setup, rounds=_rounds(request.config), iterations=1)
    rate(size, "bytes")


@pytest.mark.parametrize("tool", ["vmforge", "qemu-img"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_to_raw(benchmark, rate, request, image, mixed, workdir: Path,
                        tool: str, fmt: str) -> None:
    src = image(fmt)
    dst = workdir / f"out-{tool}.raw"
    cmd = ([*VMFORGE, "convert"] if tool == "vmforge" else [QEMU_IMG, "convert"])
    cmd += [*_source_args(tool, fmt, src), "-O", "raw", str(dst)]
    benchmark.group = f"convert {fmt}->raw (whole process)"
    _bench(benchmark, rate, request, lambda: _run(cmd), lambda: dst.unlink(missing_ok=True),
           len(mixed[1]))
    out = dst.read_bytes()   # vpc rounds the size up to its disk geometry: zeros after
    assert out[:len(mixed[1])] == mixed[1] and not any(out[len(mixed[1]):])


def _read_vmforge(path: str, fmt: str) -> None:
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    opts = {"passphrase": PASSPHRASE} if fmt == "luks" else {}
    with BlockBackend.open(path, fmt, **opts) as bb:
        for off in range(0, bb.size, len(buf)):
            n = min(len(buf), bb.size - off)
            bb.readinto(off, mv[:n])


def _read_qemu_io(path: str, fmt: str, size: int) -> None:
    step = 64 << 20
    cmds: list[str] = []
    for off in range(0, size, step):
        cmds += ["-c", f"read -q {off} {min(step, size - off)}"]
    if fmt == "luks":
        _run(["qemu-io", "-r", "--object", SECRET, "--image-opts", *cmds,
              f"driver=luks,key-secret=sec0,file.filename={path}"])
    else:
        _run(["qemu-io", "-r", "-f", fmt, *cmds, path])


#: the formats dissect.hypervisor reads from one file
DISSECT = ("qcow2", "vdi", "vpc", "vhdx", "vmdk")


def _dissect_stream(fmt: str, fh: object) -> object:
    disk = require_module("dissect.hypervisor.disk",
                          "pip install dissect.hypervisor (the test extra)")
    if fmt == "qcow2":
        from dissect.hypervisor.disk.qcow2 import QCow2

        return QCow2(fh).open()
    if fmt == "vdi":
        from dissect.hypervisor.disk.vdi import VDI

        return VDI(fh).open()
    if fmt == "vpc":
        from dissect.hypervisor.disk.vhd import VHD

        return VHD(fh)
    if fmt == "vhdx":
        from dissect.hypervisor.disk.vhdx import VHDX

        return VHDX(fh)
    if fmt == "vmdk":
        from dissect.hypervisor.disk.vmdk import VMDK

        return VMDK(fh)
    raise AssertionError(f"{disk.__name__} has no reader for {fmt} here")


def _read_dissect(path: str, fmt: str, size: int) -> None:
    with open(path, "rb") as fh:
        stream = _dissect_stream(fmt, fh)
        for _ in range(0, size, 1 << 20):
            stream.read(1 << 20)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt, reader", [
    (fmt, reader) for fmt in FORMATS for reader in ("vmforge", "qemu-io", "dissect")
    if reader != "dissect" or fmt in DISSECT])     # dissect reads only these from a file
def test_sequential_read(benchmark, rate, request, image, mixed, fmt: str, reader: str) -> None:
    src = image(fmt)
    size = len(mixed[1])
    fns: dict[str, Callable[[], object]] = {
        "vmforge": lambda: _read_vmforge(src, fmt),
        "qemu-io": lambda: _read_qemu_io(src, fmt, size),
        "dissect": lambda: _read_dissect(src, fmt, size),
    }
    benchmark.group = f"read {fmt} (1 MiB reads)"
    _bench(benchmark, rate, request, fns[reader], None, size)
