"""virtio-blk seen from a Linux guest: vmforge vs QEMU 7.2, same kernel, initramfs
and image format, side by side in one run.

Run: ``.venv/bin/python -m pytest benchmarks/bench_virtio_blk.py
--benchmark-columns=min,mean,max,rounds`` (needs ``make guests`` and Debian's
opensbi and qemu-system-misc).  Each emulator boots once per module with a
256 MiB raw disk on virtio-mmio; a round is one command typed at the guest's
shell (both consoles answer the line editor as a terminal does:
``bench_boot.shell_console``), timed on the host from the keystroke to the
command's exit status:

- sequential write: ``dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct conv=fsync``
- sequential read:  ``dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct``
- 4 KiB reads:      ``dd if=/dev/vda of=/dev/null bs=4k count=4096 iflag=direct``
  (one request per block: requests per second, the path's cost per request)

MB/s and requests/s are in each entry's ``extra_info``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from vmforge.testing.console import ProcessConsole
from vmforge.testing.oracles import require_files

from .bench_boot import FW_JUMP, SHELL_READY, shell_console

DISK = 256 << 20
COMMANDS = {
    "seq-write-64MiB": (b"dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct conv=fsync",
                        64 << 20, 64),
    "seq-read-64MiB": (b"dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct", 64 << 20, 64),
    "4k-reads-16MiB": (b"dd if=/dev/vda of=/dev/null bs=4k count=4096 iflag=direct",
                       16 << 20, 4096),
}


@pytest.fixture(scope="module", params=["vmforge", "qemu"])
def guest_shell(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[str, ProcessConsole]]:
    require_files([FW_JUMP], "Debian's OpenSBI (apt-get install opensbi)")
    disk = tmp_path_factory.mktemp("blk") / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(DISK)
    console = shell_console(request.param,
                            "-drive", f"file={disk},format=raw,if=none,id=hd0",
                            "-device", "virtio-blk-device,drive=hd0")
    try:
        console.wait_for(SHELL_READY, timeout=300)
        yield request.param, console
    finally:
        console.close()


@pytest.mark.parametrize("case", list(COMMANDS))
def test_virtio_blk_in_guest(benchmark, guest_shell: tuple[str, ProcessConsole],
                             case: str) -> None:
    emulator, console = guest_shell
    command, nbytes, requests = COMMANDS[case]

    def run() -> float:
        t0 = time.perf_counter()
        console.feed(command + b"; echo status=$?\n")
        console.wait_for(re.compile(rb"status=0"), timeout=300)
        took = time.perf_counter() - t0
        console.wait_for(SHELL_READY, timeout=60)
        return took

    benchmark.group = f"virtio-blk in the guest: {case}"
    benchmark.extra_info["emulator"] = emulator
    run()                                          # warm: the first pass allocates
    seconds = benchmark.pedantic(run, rounds=5, iterations=1)
    best = benchmark.stats.stats.min if benchmark.stats else seconds
    benchmark.extra_info["MB/s"] = round(nbytes / best / 1e6, 1)
    benchmark.extra_info["requests/s"] = round(requests / best)
    assert seconds > 0
