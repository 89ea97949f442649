"""A Linux guest at work: busybox shell loop, md5sum and gzip on vmforge's riscv-virt
beside ``qemu-system-riscv64 -M virt`` (QEMU 7.2), in one run.

Both boot OpenSBI + Linux 6.1 + the busybox initramfs (``guests/``, 256 MiB, one
hart; vmforge offers Zba/Zbb/Zbc/Zbs and Sstc as QEMU's default CPU does, so
Linux programs its timer through ``stimecmp`` on both).  The two guests run side
by side and each workload runs on one, then the other, ``REPEAT`` rounds with
the order alternating, so both see the same host; the figure is the best
wall-clock time from the command's line sent to its answer on the console:

- a shell loop: ``i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done``;
- ``md5sum`` of 16 MiB read from ``/dev/zero`` through ``dd``;
- a compression: busybox ``gzip -6`` of the guest's own busybox binary (a
  static RISC-V executable of 1.4 MB: code and data, not zeros), its
  size counted by ``wc -c``.

Run: ``.venv/bin/python benchmarks/bench_riscv_guest.py`` for a table
(``--write`` rewrites the ``## RISC-V guest`` section of ``benchmarks/RESULTS.md``),
or under pytest (``extra_info``: seconds per engine).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from vmforge.testing.console import ProcessConsole

sys.path.insert(0, str(Path(__file__).parent))     # the guests and QEMU of bench_boot.py
from bench_boot import SHELL_READY as READY
from bench_boot import shell_argv
from bench_riscv_cpu import write_results

LOOP_N = 20000
MD5_MIB = 16
REPEAT = 7                      # rounds of the table (best of)
WORKLOADS = {
    "shell loop": (f"i=0; while [ $i -lt {LOOP_N} ]; do i=$((i+1)); done; echo loop=$i\n",
                   re.compile(rb"loop=%d" % LOOP_N)),
    "md5sum": (f"dd if=/dev/zero bs=1M count={MD5_MIB} 2>/dev/null | md5sum\n",
               re.compile(rb"\n([0-9a-f]{32})  -")),
    "gzip": ("gzip -6 -c /bin/busybox | wc -c | sed 's/^/gz=/'\n",
             re.compile(rb"gz=(\d+)")),
}
SECTION = "## RISC-V guest: shell loop, md5sum and gzip"


def commands() -> dict[str, list[str]]:
    """The command line of each engine: the guest with each machine's own OpenSBI."""
    return {engine: shell_argv(engine, bios="default") for engine in ("vmforge", "qemu")}


def _timed(console: ProcessConsole, line: str, answer: re.Pattern[bytes]) -> float:
    """Wall seconds from ``line`` typed to ``answer``; returns once the prompt is back."""
    t0 = time.monotonic()
    console.feed(line.encode())
    console.wait_for(answer, timeout=600)
    took = time.monotonic() - t0
    console.wait_for(READY, timeout=60)
    return took


def run_engine(argv: list[str], repeat: int = 5) -> dict[str, float]:
    """Best wall seconds of each workload in one booted guest."""
    console = ProcessConsole(argv, terminal=True)
    try:
        console.wait_for(READY, timeout=300)
        best: dict[str, float] = {}
        for name, (line, answer) in WORKLOADS.items():
            for _ in range(repeat):
                took = _timed(console, line, answer)
                best[name] = min(best.get(name, took), took)
        return best
    finally:
        console.close()


def measure(repeat: int = REPEAT) -> dict[str, dict[str, float]]:
    """Best wall seconds of each workload on each engine: both guests booted side
    by side, each workload run on one engine then the other (the order alternating
    from round to round), so a change in the host's load reaches both."""
    cmds = commands()
    consoles = {engine: ProcessConsole(argv, terminal=True) for engine, argv in cmds.items()}
    try:
        for console in consoles.values():
            console.wait_for(READY, timeout=300)
        best: dict[str, dict[str, float]] = {engine: {} for engine in consoles}
        for rnd in range(repeat):
            for name, (line, answer) in WORKLOADS.items():
                order = list(consoles) if rnd % 2 == 0 else list(consoles)[::-1]
                for engine in order:
                    took = _timed(consoles[engine], line, answer)
                    best[engine][name] = min(best[engine].get(name, took), took)
        return best
    finally:
        for console in consoles.values():
            console.close()


def results_section(m: dict[str, dict[str, float]]) -> str:
    lines = [SECTION, "",
             f"{time.strftime('%Y-%m-%d')}. `.venv/bin/python benchmarks/bench_riscv_guest.py "
             f"--write` (best of {REPEAT}, wall clock; both guests booted side by side, each "
             "workload run on one engine then the other, alternating).",
             "OpenSBI + Linux 6.1 + busybox (`guests/`), 256 MiB, one hart; vmforge offers "
             "Zba/Zbb/Zbc/Zbs and Sstc as QEMU 7.2's default CPU, so Linux sets its timer "
             "through `stimecmp` on both (no SBI `set_timer` calls, no M-mode timer traps).",
             "The console answers the line editor's cursor query after each prompt, as a "
             "terminal does (`ProcessConsole(terminal=True)`); each time runs from the "
             "line typed to its answer.",
             "", "| workload | vmforge (s) | QEMU 7.2 TCG (s) | vmforge / QEMU speed |",
             "|---|---|---|---|"]
    for name in WORKLOADS:
        mine, qemu = m["vmforge"][name], m["qemu"][name]
        what = {"shell loop": f"{name} ({LOOP_N} trips)",
                "md5sum": f"{name} ({MD5_MIB} MiB through dd)",
                "gzip": "gzip -6 of /bin/busybox"}[name]
        lines.append(f"| {what} | {mine:.3f} | {qemu:.3f} | {qemu / mine:.2f}x |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("engine", ["vmforge", "qemu"])
def test_guest_workloads(benchmark, engine):
    cmds = commands()
    result = benchmark.pedantic(run_engine, args=(cmds[engine], 1), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


if __name__ == "__main__":
    section = results_section(measure())
    print(section)
    if "--write" in sys.argv:
        write_results(section, SECTION)
