"""NBD read throughput: vmforge's server beside qemu-nbd, qemu-img convert as the client.

Run::

    .venv/bin/python -m pytest benchmarks/bench_nbd.py --benchmark-columns=mean,min,max,rounds

A raw image of random data (``VMFORGE_BENCH_NBD_SIZE``, default 256M; 8M under
``--benchmark-disable``) in ``/dev/shm`` (or ``VMFORGE_BENCH_DIR``) is exported
read-only over TCP on 127.0.0.1 by vmforge's :class:`~vmforge.block.nbd.server.NbdServer`
(in this process, on its own threads) or by ``qemu-nbd``; each round is one
``qemu-img convert -O raw nbd://... out.raw`` (a whole process).
``extra_info.bytes_per_s``: bytes read through NBD per second.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.conftest import report_rate
from vmforge.block import BlockBackend, parse_size
from vmforge.block.nbd.server import NbdServer
from vmforge.block.nbd.uri import NbdAddress
from vmforge.testing.migration_kit import free_port
from vmforge.testing.oracles import require_program

MIB = 1 << 20


def _size(config: pytest.Config) -> int:
    default = "8M" if config.getoption("benchmark_disable", False) else "256M"
    return parse_size(os.environ.get("VMFORGE_BENCH_NBD_SIZE", default))


@pytest.fixture
def image(pytestconfig: pytest.Config) -> Iterator[tuple[Path, int]]:
    root = os.environ.get("VMFORGE_BENCH_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm")
                                                   else None)
    size = _size(pytestconfig)
    with tempfile.TemporaryDirectory(dir=root) as d:
        path = Path(d) / "src.raw"
        rng = random.Random(5)
        with open(path, "wb") as f:
            for off in range(0, size, 4 * MIB):
                f.write(rng.randbytes(min(4 * MIB, size - off)))
        yield path, size


def _qemu_nbd(path: Path, port: int) -> subprocess.Popen[bytes]:
    exe = require_program("qemu-nbd", "qemu-utils")
    proc = subprocess.Popen([exe, "-t", "-r", "-f", "raw", "-x", "exp", "-b", "127.0.0.1",
                             "-p", str(port), str(path)], stderr=subprocess.PIPE)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return proc
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError("qemu-nbd did not start")


@pytest.mark.parametrize("server", ["vmforge", "qemu-nbd"])
def test_nbd_read_throughput(benchmark, image: tuple[Path, int], server: str) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    path, size = image
    out = path.with_name("out.raw")
    if server == "vmforge":
        bb = BlockBackend.open(str(path), "raw")
        srv = NbdServer(NbdAddress("", host="127.0.0.1", port=0))
        srv.start()
        srv.add_export("exp", bb)
        port = srv.address.port
    else:
        port = free_port()
        proc = _qemu_nbd(path, port)
    uri = f"nbd://127.0.0.1:{port}/exp"

    def convert() -> None:
        subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "raw", uri, str(out)],
                       check=True)

    try:
        benchmark.pedantic(convert, rounds=5 if size > 8 * MIB else 1, iterations=1)
        with open(path, "rb") as a, open(out, "rb") as b:
            assert a.read() == b.read()
    finally:
        if server == "vmforge":
            srv.stop()
            bb.close()
        else:
            proc.terminate()
            proc.wait(10)
    report_rate(benchmark, size, "bytes")
