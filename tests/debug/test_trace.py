"""``-d in_asm,exec,cpu,nochain`` and ``-dfilter`` against QEMU 7.2's own logs of the
same program: ``in_asm`` byte for byte (block boundaries at CSRs, branches,
fence.i, illegal and FP-while-off instructions, page ends, with wfi and
sfence.vma inside blocks), ``exec``/``cpu`` line for line but for the host
address QEMU prints and ``mip`` (QEMU's CLINT resets mtimecmp to 0, so its MTIP
is pending from the start)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.debug.trace import TraceError, parse_dfilter
from vmforge.testing.oracles import require_program

VMFORGE = [sys.executable, "-m", "vmforge.cli.main"]
TOOLCHAIN = "gcc-riscv64-unknown-elf"

PROGRAM = """
    .globl _start
    .type _start, @function
    .type trap, @function
    .type far, @function
_start:
    la t0, trap
    csrw mtvec, t0
    li t0, 0
loop:
    addi t0, t0, 1
    c.addi t0, 0
    li t1, 3
    blt t0, t1, loop
    fence.i
    nop
    fadd.d f0, f1, f2
    nop
    .word 0x0000000b
    nop
    sfence.vma
    addi t2, t2, 1
    li t3, 0x2000
    csrs mstatus, t3
    fadd.d f0, f1, f2
    c.nop
    j far
trap:
    csrr t4, mepc
    addi t4, t4, 4
    csrw mepc, t4
    mret
    .size trap, . - trap
    .balign 4096
    .skip 4094
far:
    addi t5, t5, 1
    wfi
    addi t6, t6, 1
1:  j 1b
"""


def build(d: Path, source: str) -> Path:
    """``source`` linked at RAM's start: ``p.bin`` (and ``p.elf`` beside it) in ``d``."""
    tools = {t: require_program(f"riscv64-unknown-elf-{t}", TOOLCHAIN)
             for t in ("as", "ld", "objcopy")}
    (d / "p.S").write_text(source)
    subprocess.run([tools["as"], "-march=rv64gc", "-o", str(d / "p.o"), str(d / "p.S")],
                   check=True)
    subprocess.run([tools["ld"], "-Ttext=0x80000000", "-o", str(d / "p.elf"),
                    str(d / "p.o")], check=True)
    subprocess.run([tools["objcopy"], "-O", "binary", str(d / "p.elf"), str(d / "p.bin")],
                   check=True)
    return d / "p.bin"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("trace"), PROGRAM)


# a load that faults in the middle of a block; the handler (outside -dfilter's
# range) returns to the instruction after it, where QEMU starts a new block
FAULT_MID_BLOCK = """
    .option norvc
    la t0, handler
    csrw mtvec, t0
    li t1, 0x18000000           # no device there on either board: an access fault
    addi t2, zero, 1
    lw t3, 0(t1)
    addi t2, t2, 1
    addi t2, t2, 1
1:  wfi
    j 1b
    .balign 256
handler:
    csrr t4, mepc
    addi t4, t4, 4
    csrw mepc, t4
    mret
"""


def test_a_block_after_a_trap_return_is_new_as_in_qemu(tmp_path: Path) -> None:
    binary = build(tmp_path, FAULT_MID_BLOCK)
    items = "in_asm,exec,nochain"
    ours = vmforge_log(binary, items, "-dfilter", "0x80000000..0x800000ff")
    theirs = qemu_log(binary, items)
    theirs = "".join(r for r in re.split(r"(?=----------------\n|Trace )", theirs)
                     if not re.search(r"/00000000800001[0-9a-f]{2}/|0x00000000800001", r)
                     and "0x0000000000001" not in r and "/0000000000001" not in r)
    assert "IN: \nPriv: 3; Virt: 0\n0x0000000080000018:" in theirs    # after the load
    assert _normal(ours) == _normal(theirs)


def vmforge_log(program: Path, items: str, *extra: str) -> str:
    log = program.parent / f"vmforge-{items}.log"
    proc = subprocess.run([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none", "-kernel",
                           str(program), "-d", items, "-D", str(log), "-serial", "none",
                           "--timeout", "1.5", *extra], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return log.read_text()


def qemu_log(program: Path, items: str) -> str:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    log = program.parent / f"qemu-{items}.log"
    proc = subprocess.Popen([qemu, "-M", "virt", "-cpu", "rv64,h=false", "-bios", "none",
                             "-kernel", str(program), "-nographic", "-monitor", "none",
                             "-serial", "none", "-d", items, "-D", str(log)])
    try:
        proc.wait(1.5)
    except subprocess.TimeoutExpired:
        proc.terminate()            # (SIGTERM: QEMU flushes its log)
        proc.wait(30)
    return log.read_text()


def test_in_asm_is_qemus_byte_for_byte(program: Path) -> None:
    ours, theirs = vmforge_log(program, "in_asm"), qemu_log(program, "in_asm")
    assert theirs.count("IN:") == 15
    assert ours == theirs


def _normal(text: str) -> str:
    text = re.sub(r"Trace 0: 0x[0-9a-f]+ ", "Trace 0: HOST ", text)
    return re.sub(r" mip      [0-9a-f]+", " mip      -", text)


def test_in_asm_and_exec_name_functions_as_qemu(program: Path) -> None:
    """From the ELF, with its function symbols: QEMU's ``IN: _start``, ``IN: trap``
    (sized) and the names at the end of ``Trace`` lines; ``far``, the last
    function and without a size, names nothing (as in QEMU)."""
    elf = program.with_suffix(".elf")
    items = "in_asm,exec,nochain"
    ours, theirs = vmforge_log(elf, items), qemu_log(elf, items)
    assert "IN: _start\n" in theirs and "IN: trap\n" in theirs and "IN: far" not in theirs
    assert re.search(r"/0000000080000040/[0-9a-f]{8}/[0-9a-f]{8}\] trap\n", theirs), theirs
    assert _normal(ours) == _normal(theirs)


def test_exec_and_cpu_as_qemu_logs_them(program: Path) -> None:
    """Both end halted in the wfi (no interrupt enabled): the logs are whole."""
    items = "exec,cpu,fpu,nochain"
    ours, theirs = vmforge_log(program, items), qemu_log(program, items)
    assert " f31/ft11 " in theirs
    assert theirs.count("Trace 0:") == 19 and "/0000000080002000/" in theirs
    assert _normal(ours) == _normal(theirs)


def test_dfilter_limits_the_blocks(program: Path) -> None:
    ours = vmforge_log(program, "in_asm,exec", "-dfilter", "0x80000040..0x8000004f")
    starts = re.findall(r"/([0-9a-f]{16})/", ours)
    assert starts and all(0x8000_0040 <= int(s, 16) <= 0x8000_004F for s in starts)
    assert ours.count("IN:") == 3                    # the trap handler's three blocks


def test_parse_dfilter() -> None:
    assert parse_dfilter("0x1000+0x100,0x2000..0x2fff,0x3000-0x10") == [
        (0x1000, 0x10FF), (0x2000, 0x2FFF), (0x2FF1, 0x3000)]
    for bad in ("0x1000", "zz+1", "0x2000..0x1000"):
        with pytest.raises(TraceError):
            parse_dfilter(bad)


def test_bad_dfilter_is_one_line(program: Path) -> None:
    proc = subprocess.run([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none", "-kernel",
                           str(program), "-d", "in_asm", "-dfilter", "somewhere"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "-dfilter" in proc.stderr


def test_mmu_lines_as_qemu_prints_them(tmp_path: Path) -> None:
    """``-d mmu`` under Linux's Sv39 (S- and U-mode fills, faults); the lines have
    QEMU's shape; the first, OpenSBI's M-mode fetch at 0x1000, is QEMU's exactly."""
    from vmforge.guests import default_guest

    guest = default_guest()
    log = tmp_path / "mmu.log"
    subprocess.run([*VMFORGE, "run", "-M", "riscv-virt", "-m", "256M", "-kernel", guest.kernel,
                    "-append", "console=ttyS0", "-serial", "none", "-d", "mmu", "-D", str(log),
                    "--timeout", "3"], capture_output=True, timeout=120)
    lines = log.read_text().splitlines()
    assert lines[:3] == ["riscv_cpu_tlb_fill ad 1000 rw 2 mmu_idx 3",
                         "riscv_cpu_tlb_fill address=1000 ret 0 physical 0000000000001000 "
                         "prot 7",
                         "riscv_cpu_tlb_fill PMP address=0000000000001000 ret 0 prot 7 "
                         "tlb_size 4096"]
    shapes = (r"riscv_cpu_tlb_fill ad [0-9a-f]+ rw [012] mmu_idx [013]",
              r"riscv_cpu_tlb_fill address=[0-9a-f]+ ret [01] physical [0-9a-f]{16} prot [0-7]",
              r"riscv_cpu_tlb_fill PMP address=[0-9a-f]{16} ret 0 prot 7 tlb_size 4096")
    assert all(any(re.fullmatch(p, line) for p in shapes) for line in lines)
    kernel = [line for line in lines if re.search(r"ad ffffffff[0-9a-f]{8} rw 2 mmu_idx 1$",
                                                  line)]
    assert kernel, "no S-mode fetch through Sv39"
    assert any(re.search(r"address=ffffffff[0-9a-f]+ ret 0 physical 00000000802[0-9a-f]{5} "
                         r"prot [57]$", line) for line in lines)     # the kernel's text: R-X
