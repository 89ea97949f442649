"""``vmforge run -M riscv-virt`` as a whole process: start-up, and a Linux boot to the shell.

Run: ``.venv/bin/python -m pytest benchmarks/bench_run_boot.py
--benchmark-columns=min,median,rounds`` (needs ``make guests`` and Debian's opensbi).

- ``test_start_up``: process start to the machine built and stopped at once
  (``--timeout 0``: imports, options, the board, the images loaded, the device
  tree; the guest runs no instruction that matters);
- ``test_boot_to_shell``: process start to the busybox prompt on the console
  (QEMU-style options, ``-nographic``), beside ``qemu-system-riscv64 -M virt``.

Each round's CPU time (user + system of the child) goes in ``extra_info``: on a
shared machine it moves less than the wall clock.  ``VMFORGE_BENCH_PYTHON`` runs
another interpreter (a regular install: no editable finders).

``.venv/bin/python benchmarks/bench_run_boot.py [PYTHON...] [qemu]`` prints the
times to each console mark (OpenSBI's banner, "Linux version", the prompt) and the
CPU time, interleaved rounds (``ROUNDS``, default 5; ``SMP``: ``-smp N`` for both
vmforge and QEMU; ``EXTRA``: more options for vmforge, e.g. ``-icount
shift=2,sleep=off`` for the same guest work each round).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmforge.testing.oracles import oracle_missing

sys.path.insert(0, str(Path(__file__).parent))
from bench_boot import guest

ROOT = Path(__file__).resolve().parent.parent
OPENSBI = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
#: what the console shows, in order; the last is the shell's prompt
MARKS = (b"OpenSBI", b"Linux version", b"vmforge:/# ")


def command(python: str, *extra: str) -> list[str]:
    """The command line: ``python`` is an interpreter, or ``qemu`` for QEMU 7.2."""
    if python == "qemu":
        head = ["qemu-system-riscv64", "-M", "virt", "-bios", "default", "-monitor", "none",
                *extra]
    else:
        head = [python, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt", *extra]
    return [*head, "-m", "256M", "-kernel", guest("linux-riscv64"), "-initrd",
            guest("initramfs-riscv64"), "-append", "console=ttyS0", "-nographic"]


def boot(cmd: list[str], marks: tuple[bytes, ...] = MARKS) -> tuple[list[float], float]:
    """Seconds from process start to each of ``marks`` on the console, and the
    process's CPU time (it is killed at the last mark)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen, times = b"", []
    try:
        for mark in marks:
            while mark not in seen[-65536:]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"{cmd[0]} ended before {mark!r}: {seen[-300:]!r}")
                seen += chunk
            times.append(time.monotonic() - t0)
    finally:
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)
        proc.stdout.close()
        proc.stdin.close()  # type: ignore[union-attr]
    return times, usage.ru_utime + usage.ru_stime


def start_up(python: str) -> float:
    """CPU seconds of a run stopped at once (``--timeout 0``, exit status 124)."""
    proc = subprocess.Popen([*command(python), "--timeout", "0"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 124
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def python() -> str:
    if not os.path.exists(OPENSBI):
        oracle_missing("Debian's opensbi is not installed")
    return os.environ.get("VMFORGE_BENCH_PYTHON", sys.executable)


def test_start_up(benchmark, python: str) -> None:
    cpu: list[float] = []
    benchmark.pedantic(lambda: cpu.append(start_up(python)), rounds=10, iterations=1)
    benchmark.extra_info["cpu_min_s"] = min(cpu)


@pytest.mark.parametrize("who", ["vmforge", "qemu"])
def test_boot_to_shell(benchmark, python: str, who: str) -> None:
    if who == "qemu" and shutil.which("qemu-system-riscv64") is None:
        oracle_missing("qemu-system-riscv64 is not installed")
    cmd = command("qemu" if who == "qemu" else python)
    cpu: list[float] = []
    benchmark.pedantic(lambda: cpu.append(boot(cmd)[1]), rounds=3, iterations=1)
    benchmark.extra_info["cpu_min_s"] = min(cpu)


def main(pythons: list[str]) -> None:
    rounds = int(os.environ.get("ROUNDS", "5"))
    extra = os.environ.get("EXTRA", "").split()
    smp = ["-smp", os.environ["SMP"]] if os.environ.get("SMP") else []
    rows: dict[str, list[list[float]]] = {p: [] for p in pythons}
    for _ in range(rounds):
        for p in pythons:
            times, cpu = boot(command(p, *smp, *([] if p == "qemu" else extra)))
            rows[p].append([*times, cpu])
    for p, got in rows.items():
        cols = list(zip(*got, strict=True))
        print(p, "  ".join(f"{name} {min(c):.3f}/{statistics.median(c):.3f}" for name, c in
                           zip(("OpenSBI", "Linux", "prompt", "cpu"), cols, strict=True)))
    print("min/median s; load average", os.getloadavg())


if __name__ == "__main__":
    main(sys.argv[1:] or [sys.executable, "qemu"])
