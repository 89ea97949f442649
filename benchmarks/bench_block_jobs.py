"""Block jobs: mirror throughput, and what the jobs' hooks cost a guest's request.

Run::

    .venv/bin/python -m pytest benchmarks/bench_block_jobs.py --benchmark-columns=mean,min,rounds

``VMFORGE_BENCH_JOB_SIZE`` sets the image size (default 256M; 8M under
``--benchmark-disable``), ``VMFORGE_BENCH_DIR`` where images go (default
``/dev/shm`` when there, so the figure is the job's, not the disk's).
``extra_info.bytes_per_s``: bytes mirrored per second (start to pivot);
``requests_per_s``: 4 KiB writes through a BlockBackend per second.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.conftest import report_rate
from vmforge.block import BlockBackend, create_image, parse_size
from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.jobs import JobRegistry, start_mirror

MIB = 1 << 20


def _size(config: pytest.Config) -> int:
    default = "8M" if config.getoption("benchmark_disable", False) else "256M"
    return parse_size(os.environ.get("VMFORGE_BENCH_JOB_SIZE", default))


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = os.environ.get("VMFORGE_BENCH_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm")
                                                   else None)
    with tempfile.TemporaryDirectory(dir=root) as d:
        yield Path(d)


def test_mirror_throughput(benchmark, workdir: Path, pytestconfig: pytest.Config) -> None:
    size = _size(pytestconfig)
    src = str(workdir / "src.qcow2")
    create_image("qcow2", src, size)
    rng = random.Random(3)
    with BlockBackend.open(src, "qcow2", readonly=False) as bb:
        for off in range(0, size, 4 * MIB):
            bb.write(off, rng.randbytes(min(4 * MIB, size - off)))
    bb = BlockBackend.open(src, "qcow2", readonly=False)
    n = [0]

    def mirror() -> None:
        n[0] += 1
        target = str(workdir / f"copy{n[0]}.qcow2")
        job = start_mirror(bb, target, device="hd0", registry=JobRegistry())
        assert job.wait_ready(600)
        job.complete()
        assert job.wait(600) and job.error is None and bb.filename == target

    benchmark.pedantic(mirror, rounds=3 if size > 8 * MIB else 1, iterations=1)
    bb.close()
    report_rate(benchmark, size, "bytes")


@pytest.mark.parametrize("attached", ["nothing", "bitmap"])
def test_write_request_cost(benchmark, workdir: Path, attached: str) -> None:
    path = str(workdir / "d.raw")
    create_image("raw", path, 64 * MIB)
    bb = BlockBackend.open(path, "raw", readonly=False)
    if attached == "bitmap":
        bb.add_dirty_bitmap(DirtyBitmap(bb.size, 65536))
    data = [memoryview(bytes(4096))]
    count = 20000

    def writes() -> None:
        for i in range(count):
            bb.pwritev((i % 16384) * 4096, data)

    benchmark.pedantic(writes, rounds=3, iterations=1)
    bb.close()
    report_rate(benchmark, count, "requests")
