"""The RISC-V disassembler behind ``-d in_asm`` (vmforge.debug.disasm), on real code.

Run::

    .venv/bin/python -m pytest benchmarks/bench_disasm.py --benchmark-columns=mean,min,rounds

Disassembles the first 128 KiB of Debian's OpenSBI (``fw_jump.bin``) as one run
of instructions, with the text cache emptied before each round (the cost of
code never seen before); ``extra_info.insns_per_s`` is instructions per second.
"""

from __future__ import annotations

from pathlib import Path

from vmforge.debug.disasm import _render, disassemble
from vmforge.testing.oracles import require_files

OPENSBI = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin")


def test_disassemble_opensbi(benchmark) -> None:
    (firmware,) = require_files([OPENSBI], "Debian's OpenSBI (apt-get install opensbi)")
    code = firmware.read_bytes()[:128 << 10]

    def run() -> int:
        _render.cache_clear()
        return len(disassemble(code, 0x8000_0000))

    count = benchmark.pedantic(run, rounds=3, iterations=1)
    assert count > 20_000
    if benchmark.stats is not None:
        benchmark.extra_info["insns_per_s"] = count / benchmark.stats.stats.mean
