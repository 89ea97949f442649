"""Two CPU-bound guest processes on ``-smp 1`` and ``-smp 2``: the speed-up of
vmforge's harts on host threads (``-accel interp,thread=multi``) beside QEMU
7.2's multi-threaded TCG (its default on riscv64 virt), in one run.

Each engine boots OpenSBI + Linux 6.1 + the busybox initramfs (``guests/``,
256 MiB) once per hart count; at the shell a job of two processes, each a
busybox shell loop of :data:`LOOP_N` trips, runs ``repeat`` times; the figure is
the best wall-clock time from the command's line sent to its answer.  The
speed-up is the ``-smp 1`` time over the ``-smp 2`` time (2.0 at best; the
host's other load takes its share: the table says the load average).

Run: ``.venv/bin/python benchmarks/bench_riscv_smp.py`` for a table
(``--write`` puts it in the ``## RISC-V -smp 2`` section of
``benchmarks/RESULTS.md``), or under pytest (``extra_info``: seconds).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from vmforge.testing.console import ProcessConsole

sys.path.insert(0, str(Path(__file__).parent))
from bench_riscv_guest import READY, commands, write_results

LOOP_N = 20000
JOB = (f"a() {{ i=0; while [ $i -lt {LOOP_N} ]; do i=$((i+1)); done; }}; "
       "a & a & wait; echo pa''r=done\n")
ANSWER = re.compile(rb"par=done")
SECTION = "## RISC-V -smp 2: two processes on harts on host threads"
ENGINES = {"vmforge": ["-accel", "interp,thread=multi"], "qemu": ["-accel", "tcg,thread=multi"]}


def run_job(argv: list[str], repeat: int = 3) -> float:
    """Best wall seconds of the two-process job in one booted guest."""
    console = ProcessConsole(argv, terminal=True)
    try:
        console.wait_for(READY, timeout=300)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.monotonic()
            console.feed(JOB.encode())
            console.wait_for(ANSWER, timeout=900)
            best = min(best, time.monotonic() - t0)
            console.wait_for(READY, timeout=60)
        return best
    finally:
        console.close()


def engine_argv(engine: str, harts: int) -> list[str]:
    return [*commands()[engine], *ENGINES[engine], "-smp", str(harts)]


def measure(repeat: int = 3) -> dict[str, dict[int, float]]:
    return {engine: {harts: run_job(engine_argv(engine, harts), repeat) for harts in (1, 2)}
            for engine in ENGINES}


def results_section(m: dict[str, dict[int, float]], load: tuple[float, ...]) -> str:
    lines = [SECTION, "",
             f"{time.strftime('%Y-%m-%d')}. `.venv/bin/python benchmarks/bench_riscv_smp.py "
             "--write` (best of 3, wall clock, one booted guest per engine and hart count; "
             f"host: {os.cpu_count()} cores shared with other work, load average "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start).",
             f"Two busybox shell loops of {LOOP_N} trips each at once (`a & a & wait`); "
             "vmforge with `-accel interp,thread=multi`, QEMU 7.2 with "
             "`-accel tcg,thread=multi`.", "",
             "| engine | -smp 1 (s) | -smp 2 (s) | speed-up |", "|---|---|---|---|"]
    for engine, name in (("vmforge", "vmforge (harts on threads)"),
                         ("qemu", "QEMU 7.2 MTTCG")):
        one, two = m[engine][1], m[engine][2]
        lines.append(f"| {name} | {one:.3f} | {two:.3f} | {one / two:.2f}x |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("harts", [1, 2])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_processes(benchmark, engine, harts):
    argv = engine_argv(engine, harts)
    result = benchmark.pedantic(run_job, args=(argv, 1), rounds=1, iterations=1)
    benchmark.extra_info["seconds"] = result


if __name__ == "__main__":
    load = os.getloadavg()
    section = results_section(measure(), load)
    print(section)
    if "--write" in sys.argv:
        write_results(section, SECTION)
