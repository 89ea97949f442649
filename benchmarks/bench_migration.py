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
    if kind == "qemu-x86":
        return GuestProcess(["qemu-system-x86_64", *args], qmp)
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
        self.busy()
        self.port = free_port()
        self.dst = _start(self.kind, [*self.args, "-incoming", f"tcp:127.0.0.1:{self.port}"],
                          self.tmp / f"d{self.n}.qmp")
        self.procs.append(self.dst)
        self.dst.qmp("query-status")              # listening

    def busy(self) -> None:
        """The source's guest, booted, starts counting."""
        self.src.wait_for(b"# ", 300)
        self.src.type(b"i=0; while true; do i=$((i+1)); echo count-$i; sleep 0.05; done &\n")
        self.src.wait_for(b"count-10", 60)

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


# -- a KVM microvm guest: vmforge -M microvm -accel kvm beside QEMU 7.2's microvm ------------

MICROVM_MEMORY = 64


def _microvm_count_guest(tmp: Path) -> Path:
    """src/plugins/vmforge-x86-microvm/tests/guests/count.c, built by that suite's builder."""
    import importlib.util
    import sys

    from vmforge.accel.kvm import kvm_available
    from vmforge.testing.oracles import oracle_missing

    why = kvm_available()
    if why is not None:
        oracle_missing(why)
    path = ROOT / "src/plugins/vmforge-x86-microvm/tests/conftest.py"
    spec = importlib.util.spec_from_file_location("microvm_guest_builder", path)
    assert spec is not None and spec.loader is not None
    mod = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod           # (its dataclasses look themselves up there)
    spec.loader.exec_module(mod)
    return Path(mod.build_guest("count", tmp, ["COUNT=100000"]))


class MicrovmRounds(Rounds):
    """Rounds of the counting microvm guest (it counts for minutes: migrated mid-count)."""

    def busy(self) -> None:
        self.src.wait_for(b"count 5\n", 60)

    def check(self) -> None:
        self.dst.wait_for(b"count ", 30)          # both emulators' guests go on counting


@pytest.fixture(params=["vmforge", "qemu"])
def microvm_rounds(request: Any, tmp_path: Path) -> Iterator[Rounds]:
    kernel = _microvm_count_guest(tmp_path)
    machine = "microvm" if request.param == "vmforge" else "microvm,acpi=off"
    args = ["-M", machine, "-accel", "kvm", "-m", f"{MICROVM_MEMORY}M", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", str(kernel)]
    kind = "qemu-x86" if request.param == "qemu" else "vmforge"
    r = MicrovmRounds(kind, args, tmp_path)
    try:
        yield r
    finally:
        r.close()


@needs("qemu-system-x86_64", package="qemu-system-x86")
def test_microvm_kvm_migration_round(benchmark: Any, microvm_rounds: Rounds) -> None:
    test_live_migration_round(benchmark, microvm_rounds)
    benchmark.extra_info["emulator"] = "vmforge" if microvm_rounds.kind == "vmforge" else "qemu"
    benchmark.extra_info["memory_mib"] = MICROVM_MEMORY
