"""Live migration of a busy Linux guest, vmforge beside QEMU 7.2, on loopback tcp.

The same guest for both (guests/build.py's riscv64 kernel and busybox initramfs,
256 MiB, a counter loop printing to the console every 50 ms) boots in a fresh
source process each round (not timed), then a destination starts with
``-incoming tcp:127.0.0.1:PORT``, ``migrate`` is sent and ``completed`` awaited.
The timed figure is that, as a management tool sees it (``migrate`` to
``completed``); ``downtime_ms`` and ``total_time_ms`` in the extra info are what
each emulator's ``query-migrate`` reported, averaged over the rounds.  vmforge's
destination must go on counting; QEMU 7.2's riscv virt guest stops counting
after a migration (its timer interrupts do not come back), so there only the
migration itself is checked.

Run::

    .venv/bin/python -m pytest benchmarks/bench_migration.py --benchmark-columns=mean,min,rounds

``VMFORGE_BENCH_ROUNDS`` sets the rounds (default 5).  Skipped, saying why,
without QEMU or the guest images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmforge.testing.migration_kit import GuestProcess, free_port, guest_file, riscv_linux_args
from vmforge.testing.oracles import needs

pytestmark = needs("qemu-system-riscv64", package="qemu-system-misc")

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("VMFORGE_BENCH_ROUNDS", "5"))
MEMORY = 256


def _start(kind: str, args: list[str], qmp: Path) -> GuestProcess:
    if kind == "qemu":
        return GuestProcess(["qemu-system-riscv64", *args], qmp)
    return GuestProcess.vmforge(args, qmp)


class Rounds:
    """Each round: a freshly booted busy guest migrates to a fresh process."""

    def __init__(self, kind: str, args: list[str], tmp: Path) -> None:
        self.kind, self.args, self.tmp = kind, args, tmp
        self.n = 0
        self.procs: list[GuestProcess] = []
        self.downtimes: list[int] = []
        self.totals: list[int] = []

    def setup(self) -> None:
        self.close()
        self.n += 1
        self.src = _start(self.kind, self.args, self.tmp / f"s{self.n}.qmp")
        self.procs.append(self.src)
        self.src.wait_for(b"# ", 300)
        self.src.type(b"i=0; while true; do i=$((i+1)); echo count-$i; sleep 0.05; done &\n")
        self.src.wait_for(b"count-10", 60)
        self.port = free_port()
        self.dst = _start(self.kind, [*self.args, "-incoming", f"tcp:127.0.0.1:{self.port}"],
                          self.tmp / f"d{self.n}.qmp")
        self.procs.append(self.dst)
        self.dst.qmp("query-status")              # listening

    def migrate(self) -> None:
        assert self.src.qmp("migrate", uri=f"tcp:127.0.0.1:{self.port}") == {}
        info = self.src.wait_migration()
        assert info["status"] == "completed", info
        self.downtimes.append(info["downtime"])
        self.totals.append(info["total-time"])

    def check(self) -> None:
        if self.kind == "vmforge":
            self.dst.wait_for(b"count-", 30)      # the guest goes on there

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        self.procs.clear()


@pytest.fixture(params=["vmforge", "qemu"])
def rounds(request: Any, tmp_path: Path) -> Iterator[Rounds]:
    args = riscv_linux_args(guest_file(ROOT, "linux-riscv64"),
                            guest_file(ROOT, "initramfs-riscv64"), None, memory=MEMORY)
    r = Rounds(request.param, args, tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_live_migration_round(benchmark: Any, rounds: Rounds) -> None:
    def timed() -> None:
        rounds.migrate()

    def setup() -> None:
        if rounds.n:
            rounds.check()
        rounds.setup()

    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS, iterations=1)
    rounds.check()
    benchmark.extra_info["emulator"] = rounds.kind
    benchmark.extra_info["memory_mib"] = MEMORY
    benchmark.extra_info["downtime_ms"] = sum(rounds.downtimes) / len(rounds.downtimes)
    benchmark.extra_info["total_time_ms"] = sum(rounds.totals) / len(rounds.totals)
    print(f"\n{rounds.kind}: downtime {rounds.downtimes} ms, total {rounds.totals} ms")
