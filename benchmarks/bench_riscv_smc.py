"""RISC-V CPU: data sharing 4 KiB pages with code, vmforge's compiled tier vs QEMU TCG.

Small firmware and bare-metal programs often link ``.data``/``.bss`` right after
``.text``, so the hot loop's stores go to the page holding its own code.  An
emulator that drops (or stops using) the compiled code of a page on every store
into it runs such a program far slower than the same program with its data a
page away.  The program here (xorshift into a 256-counter histogram, folded
into a hash every 4096 draws) is built twice with riscv64-unknown-elf-gcc -O2:
*shared* (``.data``/``.bss`` straight after ``.text``: the counters share the
code's page) and *apart* (``.data`` aligned to the next page).  It exits through
the SiFive test device like ``bench_riscv_cpu.py``'s, whose runners it uses.

Both engines are credited with the difference between a long and a short run
(marginal MIPS: QEMU's start-up and vmforge's compile time left out), CPU time.

Run: ``.venv/bin/python -m pytest benchmarks/bench_riscv_smc.py
--benchmark-columns=mean`` (``extra_info.mips``, whole runs), or
``.venv/bin/python benchmarks/bench_riscv_smc.py`` for the markdown of the
``## RISC-V CPU: data beside code`` section of RESULTS.md (``--write`` puts it
there).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))     # the runners of bench_riscv_cpu.py
from bench_riscv_cpu import (
    CC,
    LINK,
    _record,
    build_native,
    run_native,
    run_qemu,
    run_vmforge,
    write_results,
)
from bench_riscv_cpu import build as build_elf

PROGRAM = r"""
#include <stdint.h>
#ifndef ROUNDS
#define ROUNDS 1000
#endif
static uint32_t counts[256];
volatile uint64_t sink;

int main(void) {
    uint64_t xs = 88172645463325252ull, acc = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < 4096; i++) {
            xs ^= xs << 13; xs ^= xs >> 7; xs ^= xs << 17;
            counts[xs & 255] += (uint32_t)(xs >> 32) | 1;
        }
        for (int i = 0; i < 256; i++) { acc = acc * 31 + counts[i]; counts[i] = 0; }
    }
    sink = acc;
    return acc == 0;
}
"""

# bench_riscv_cpu's layout puts .rodata and .data on pages of their own (apart);
# without those alignments .data/.bss follow .text straight away (shared)
SHARED_LINK = (LINK.replace("  . = ALIGN(0x1000);\n  .rodata", "  .rodata")
               .replace("  . = ALIGN(0x1000);\n  .data", "  .data"))
LAYOUTS = {"shared": SHARED_LINK, "apart": LINK}
#: (short, long) rounds: the long runs take a few tenths of a second on the faster engine
ROUNDS = {"shared": (500, 5000), "apart": (5000, 50000)}


def build(layout: str, rounds: int | None = None) -> Path:
    """The ELF of ``layout`` (bench_riscv_cpu's builder: cached, a .bin beside it)."""
    return build_elf(ROUNDS[layout][1] if rounds is None else rounds, PROGRAM,
                     LAYOUTS[layout])


def shares_a_page(elf: Path) -> bool:
    """Whether the hot counters lie on a page holding code (as the layout says)."""
    out = subprocess.run([CC.replace("gcc", "nm"), str(elf)], capture_output=True,
                         text=True, check=True).stdout
    syms = {p[2]: int(p[0], 16) for p in (line.split() for line in out.splitlines())
            if len(p) == 3}
    return syms["counts"] >> 12 == syms["main"] >> 12


@pytest.fixture(scope="module", params=list(LAYOUTS))
def program(request):
    elf = build(request.param)
    assert shares_a_page(elf) == (request.param == "shared")
    return elf


def test_vmforge(benchmark, program):
    count = run_vmforge(program)[1]
    _record(benchmark, lambda: run_vmforge(program), count)


def test_qemu_tcg(benchmark, program):
    count = run_vmforge(program)[1]
    _record(benchmark, lambda: run_qemu(program), count)


def measure(repeat: int = 3) -> dict[str, dict[str, float]]:
    """Marginal MIPS of each engine on each layout (best of ``repeat``)."""
    m: dict[str, dict[str, float]] = {}
    for layout in LAYOUTS:
        short, long_ = (build(layout, n) for n in ROUNDS[layout])
        assert shares_a_page(long_) == (layout == "shared")
        n_short, n_long = run_vmforge(short)[1], run_vmforge(long_)[1]
        dn = n_long - n_short
        v = min(run_vmforge(long_)[0] for _ in range(repeat)) - \
            min(run_vmforge(short)[0] for _ in range(repeat))
        i = min(run_vmforge(long_, jit=False)[0] for _ in range(repeat)) - \
            min(run_vmforge(short, jit=False)[0] for _ in range(repeat))
        q = min(run_qemu(long_) for _ in range(repeat)) - \
            min(run_qemu(short) for _ in range(repeat))
        m[layout] = {"instructions": n_long, "delta": dn, "vmforge": dn / v / 1e6,
                     "interpreter": dn / i / 1e6, "qemu": dn / q / 1e6}
    # the host's own build (one build: the layout is the RISC-V linker's matter)
    exe_short, exe_long = (build_native(n, PROGRAM) for n in ROUNDS["apart"])
    c = min(run_native(exe_long) for _ in range(repeat)) - \
        min(run_native(exe_short) for _ in range(repeat))
    for r in m.values():
        r["native"] = m["apart"]["delta"] / c / 1e6
    return m


def results_section(m: dict[str, dict[str, float]]) -> str:
    lines = [
        "## RISC-V CPU: data beside code",
        "",
        f"{time.strftime('%Y-%m-%d')}. `.venv/bin/python benchmarks/bench_riscv_smc.py --write` "
        "(best of 3, CPU time, marginal: the difference between a long and a short "
        "run, so neither QEMU's start-up nor vmforge's compiling counts; "
        + ", ".join(f"{k}: {n[1]} and {n[0]} rounds" for k, n in ROUNDS.items()) + ").",
        "A bare-metal RV64GC program (xorshift into a 256-counter histogram, "
        f"{m['shared']['instructions'] / 1e6:.0f} M instructions in the shared long run, "
        f"{m['apart']['instructions'] / 1e6:.0f} M in the other) built "
        "twice: *shared*, its counters in `.bss` straight after `.text` (every store "
        "goes to the page holding the loop's code), and *apart*, `.data` aligned to "
        "the next page.  The same ELF on each engine.",
        "",
        "| layout | vmforge compiled (MIPS) | vmforge interpreter (MIPS) | "
        "QEMU TCG (MIPS) | vmforge / QEMU | the host's build (`cc -O2`) / QEMU |",
        "|---|---|---|---|---|---|",
    ]
    for layout, r in m.items():
        lines.append(f"| {layout} | {r['vmforge']:.0f} | {r['interpreter']:.0f} | "
                     f"{r['qemu']:.0f} | {r['vmforge'] / r['qemu']:.2f}x | "
                     f"{r['native'] / r['qemu']:.2f}x |")
    s, a = m["shared"], m["apart"]
    ratio, apart = s["vmforge"] / s["qemu"], a["vmforge"] / a["qemu"]
    lines += [
        "",
        f"On the shared layout vmforge runs at {ratio:.1f}x QEMU TCG (issue #14 asks "
        f"for at least 3x: {'met' if ratio >= 3 else 'NOT met'}); QEMU loses "
        f"{a['qemu'] / s['qemu']:.1f}x to the shared page, vmforge "
        f"{a['vmforge'] / s['vmforge']:.2f}x.  A compiled store into a page holding "
        "code looks up the page's map of translated halfwords inline (the write-TLB "
        "entry points at it) and stores straight away when it writes none of them; "
        "a store into translated bytes invalidates only the records and compiled "
        "regions holding them (`src/_fast/riscv_code.pxi`).  Before this, every such "
        "store threw the page's compiled regions away and left for the interpreter "
        "(the issue measured about 1.15x the interpreter's speed on such a program).",
        "",
        f"On the apart layout vmforge runs at {apart:.2f}x QEMU "
        f"(the issue asks for at least 1.5x: {'met' if apart >= 1.5 else 'NOT met'}). "
        f"The host's own build of the program runs at {a['native'] / a['qemu']:.2f}x QEMU: "
        "the loop is a chain of six dependent shifts and xors per draw, which bounds any "
        f"engine; QEMU runs at {a['qemu'] / a['native']:.2f} of the host's speed, vmforge at "
        f"{a['vmforge'] / a['native']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    section = results_section(measure())
    print(section)
    if "--write" in sys.argv:
        write_results(section, "## RISC-V CPU: data beside code")
