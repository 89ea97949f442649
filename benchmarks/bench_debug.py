"""What looking inside costs: a Python hook on one kernel function during a Linux
boot (time to the shell with and without it), and QEMU's traces off vs on for a
bare-metal program, vmforge beside QEMU with the same flags.

Run: ``.venv/bin/python -m pytest benchmarks/bench_debug.py --benchmark-columns=min,mean``
(needs ``make guests``, Debian's opensbi and qemu-system-misc, and the
riscv64-unknown-elf binutils).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))     # the boot helpers of bench_boot.py
from bench_boot import FW_JUMP, QEMU, boot_qemu, guest, targets

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.testing.oracles import oracle_missing
from vmforge.testing.riscv_asm import assemble

#: called thousands of times while Linux boots to its shell
HOOKED = "kmem_cache_alloc"


def _symbol(name: str) -> int:
    system_map = Path(guest("linux-riscv64")).with_name("System.map")
    for line in system_map.read_text().splitlines():
        addr, _kind, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise LookupError(f"{name} is not in {system_map}")


def boot_vmforge(t: dict, hook_at: int | None) -> float:
    from vmforge_riscv_virt.machine import RiscvVirt

    console = BufferChar()
    m = RiscvVirt(MachineConfig(machine="riscv-virt", memory=MachineConfig.parse_memory(
        t["memory"]), bios=FW_JUMP, kernel=t["kernel"], initrd=t["initrd"],
        append=t["append"] or "", serial=[console]))
    m.realize()
    calls = [0]
    if hook_at is not None:
        def count(hart: object, pc: int, size: int) -> None:
            calls[0] += 1
        m.hooks.code(count, hook_at, hook_at)
    t0 = time.perf_counter()
    m.start()
    try:
        console.wait_for(t["prompt"], timeout=300)
        seconds = time.perf_counter() - t0
    finally:
        m.stop()
    assert hook_at is None or calls[0] > 100
    return seconds


@pytest.mark.parametrize("case", ["vmforge", "vmforge-hooked", "qemu"])
def test_linux_boot_with_a_hook_on_one_function(benchmark, case: str) -> None:
    t = targets("linux")
    benchmark.group = f"time to the Linux shell, a Python hook on {HOOKED}"
    if case == "qemu":
        seconds = benchmark.pedantic(boot_qemu, args=(t,), rounds=3, iterations=1)
    else:
        hook_at = _symbol(HOOKED) if case == "vmforge-hooked" else None
        seconds = benchmark.pedantic(boot_vmforge, args=(t, hook_at), rounds=3, iterations=1)
    assert seconds > 0


# about 3 M instructions in 4 blocks, then the SiFive test finisher ends the run
LOOP = """
    .option norvc
    li t0, 0
    li t1, 1000000
loop:
    addi t0, t0, 1
    bne t0, t1, loop
    lui t2, 0x100
    lui t3, 0x5
    addi t3, t3, 0x555
    sw t3, 0(t2)
1:  j 1b
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trace")
    path = d / "loop.bin"
    path.write_bytes(assemble(LOOP, d))
    return path


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-300:]!r}")
    return seconds


@pytest.mark.parametrize("emulator", ["vmforge", "qemu"])
@pytest.mark.parametrize("trace", ["off", "in_asm", "exec,nochain"])
def test_trace_off_and_on(benchmark, program: Path, tmp_path: Path, emulator: str,
                          trace: str) -> None:
    log = tmp_path / "trace.log"
    flags = [] if trace == "off" else ["-d", trace, "-D", str(log)]
    if emulator == "qemu":
        if QEMU is None:
            oracle_missing("qemu-system-riscv64 (Debian qemu-system-misc) is not installed")
        cmd = [QEMU, "-M", "virt", "-bios", "none", "-kernel", str(program), "-nographic",
               "-monitor", "none", "-serial", "none", *flags]
    else:
        cmd = [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt", "-bios",
               "none", "-kernel", str(program), "-serial", "none", *flags]
    benchmark.group = f"a 3 M-instruction program, whole process, -d {trace}"
    seconds = benchmark.pedantic(_run, args=(cmd,), rounds=3, iterations=1)
    assert seconds > 0
