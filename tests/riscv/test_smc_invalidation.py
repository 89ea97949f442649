"""Self-modifying code and the compiled tier: a store invalidates exactly the
decoded and compiled code that holds the bytes it writes.

A store beside code (data sharing a 4 KiB page with it) must not throw the
compiled code away; a store into code must be seen at once: into the next
instruction of a hot compiled loop, into a later instruction of the block that
is running, into a function on another page reached by ``jalr``.  The same
self-checking program runs on vmforge (compiled tier and interpreter) and on
QEMU 7.2 (``qemu-system-riscv64 -M virt -bios none``), which must all pass it.

Without fence.i the ISA leaves open when a hart sees its own stores into code.
vmforge sees them at the next instruction, interpreted or compiled; QEMU 7.2 has
no precise SMC for RISC-V: the rest of the running translation block runs as
translated.  So the program QEMU also runs puts a jump (which ends QEMU's
block) between each patching store and the patched instruction, and the
variant storing straight into the next instruction is vmforge's alone.
"""

from __future__ import annotations

import subprocess

import pytest

from vmforge.testing.oracles import require_program

QEMU = "qemu-system-riscv64"

# Each case is a program of its own (so that no compiled region of one case
# runs another's loop); it ends through the test device: 0x5555 when its check
# passed, 0x3333 when not.  No compressed instructions: the patches are 4-byte
# stores over 4-byte instructions.  {sep}: what comes between a patching store
# and the code it patches.
PROLOGUE = r"""
    .option norvc
    la t0, fail
    csrw mtvec, t0
    li gp, 0
"""
# exits through the test device: 0x5555, or (gp << 16) | 0x3333 (gp: 0 unless set)
EPILOGUE = r"""
pass:
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
9:  j 9b
fail:
    li t0, 0x100000
    slli t1, gp, 16
    li t2, 0x3333
    or t1, t1, t2
    sw t1, 0(t0)
8:  j 8b
"""
CASES = {
    # a hot loop storing into a buffer right after its code
    "beside": r"""
    la a0, buf1
    li a1, 0
    li a2, 3000
    li a3, 0
1:  andi t0, a1, 63
    slli t0, t0, 3
    add t0, a0, t0
    sd a1, 0(t0)
    ld t1, 0(t0)
    add a3, a3, t1
    addi a1, a1, 1
    blt a1, a2, 1b
    li t6, 4498500          # 0 + 1 + ... + 2999
    bne a3, t6, fail
    j pass
buf1:
    .space 512
""",
    # the loop patches the instruction right after the store (a head: jumped to)
    "next": r"""
    la t2, p2
    lw s3, p2new
    li s1, 0
    li s2, 200
    li t3, 50
2:  addi s2, s2, -1
    bne s2, t3, p2
    sw s3, 0(t2)
    {sep}
p2: addi s1, s1, 1
    bnez s2, 2b
    li t6, 149 + 51 * 100
    bne s1, t6, fail
    j pass
p2new: addi s1, s1, 100     # a template: never run where it is
""",
    # ... a later instruction of the running block, not a head
    "later": r"""
    la t2, p3
    lw s3, p3new
    li s1, 0
    li s4, 0
    li s2, 100
    li t3, 40
3:  addi s2, s2, -1
    bne s2, t3, 4f
    sw s3, 0(t2)
    {sep}
4:  addi s4, s4, 1
    xori s5, s4, 3
p3: addi s1, s1, 1
    bnez s2, 3b
    li t6, 59 + 41 * 7
    bne s1, t6, fail
    j pass
p3new: addi s1, s1, 7
""",
    # ... an instruction only ever run compiled (its path is taken late)
    "compiled-only": r"""
    la t2, p6
    lw s3, p6new
    li s1, 0
    li s2, 100
    li t3, 30
    li t4, 50
3:  addi s2, s2, -1
    bne s2, t3, 4f
    sw s3, 0(t2)
    {sep}
4:  bgeu s2, t4, 5f
p6: addi s1, s1, 1
5:  bnez s2, 3b
    li t6, 19 + 31 * 7
    bne s1, t6, fail
    j pass
p6new: addi s1, s1, 7
""",
    # ... a hot function on another page, called by jalr
    "other-page": r"""
    la s6, f4
    lw s3, f4new
    li s1, 0
    li s2, 100
    li t3, 30
5:  addi s2, s2, -1
    bne s2, t3, 6f
    sw s3, 0(s6)
    {sep}
6:  li a0, 0
    jalr ra, 0(s6)
    add s1, s1, a0
    bnez s2, 5b
    li t6, 69 + 31 * 5
    bne s1, t6, fail
    j pass
f4new: addi a0, a0, 5
    .balign 4096
f4: addi a0, a0, 1
    ret
""",
    # Linux-like: new code stored over code run hot, fence.i, run
    "fence.i": r"""
    la s7, g5
    li s2, 50
7:  jalr ra, 0(s7)
    addi s2, s2, -1
    bnez s2, 7b
    li t6, 11
    bne a0, t6, fail
    la t0, h5
    lw t1, 0(t0)
    sw t1, 0(s7)
    fence.i
    jalr ra, 0(s7)
    li t6, 22
    bne a0, t6, fail
    j pass
h5: li a0, 22
    .balign 4096
g5: li a0, 11
    ret
""",
}


# ... compiled-only, while the loop also stores beside its code every trip (so the
# page's write-TLB entry is there: the patching store takes the compiled fast
# path for stores into code pages, which must see p6 as translated)
CASES["compiled-only-warm"] = (
    CASES["compiled-only"].replace("    li s1, 0\n", "    la t5, scratch\n    li s1, 0\n")
    .replace("3:  addi s2, s2, -1\n", "3:  addi s2, s2, -1\n    sw s2, 0(t5)\n")
    + "scratch: .word 0\n")


def source(case: str, sep: str) -> str:
    """The program of ``case``; ``sep`` between a patching store and its target."""
    return PROLOGUE + CASES[case].replace("{sep}", sep) + EPILOGUE


AFTER_JUMP = "j 91f\n91:"       # ends QEMU's translation block: its outcome too
AT_ONCE = ""                    # vmforge's: the store is seen by the next instruction

# a hot loop storing beside its code, then ebreak: how often compiled code is left
BESIDE = r"""
    .option norvc
    la a0, buf
    li a1, 0
    li a2, 20000
1:  andi t0, a1, 63
    slli t0, t0, 3
    add t0, a0, t0
    sd a1, 0(t0)
    addi a1, a1, 1
    blt a1, a2, 1b
    ebreak
buf:
    .space 512
"""


def _run(rv_env, image: bytes, jit: bool):
    _space, hart = rv_env.make_machine(image)
    hart.jit = jit
    try:
        hart.run(10_000_000)
    except rv_env.ProgramExit as e:
        return hart, e.value
    return hart, None


@pytest.mark.parametrize("sep", [AFTER_JUMP, AT_ONCE], ids=["after-jump", "at-once"])
@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "interpreter"])
@pytest.mark.parametrize("case", list(CASES))
def test_self_modifying_code_runs_as_written(rv_asm, rv_env, case, jit, sep):
    image, _syms = rv_asm(source(case, sep))
    hart, status = _run(rv_env, image, jit)
    assert status == 0x5555, f"{case}: exit {status!r} at pc {hart.pc:#x}"
    if jit:
        assert hart._stats()["jit_regions"] > 0


@pytest.mark.parametrize("case", list(CASES))
def test_self_modifying_code_on_qemu(rv_asm, tmp_path, case):
    """The oracle passes the same programs (so their expectations are QEMU's)."""
    qemu = require_program(QEMU, "qemu-system-misc")
    image, _syms = rv_asm(source(case, AFTER_JUMP))
    (tmp_path / "smc.bin").write_bytes(image)
    done = subprocess.run([qemu, "-M", "virt", "-bios", "none", "-kernel",
                           str(tmp_path / "smc.bin"), "-nographic", "-monitor", "none",
                           "-serial", "none"], stdin=subprocess.DEVNULL, timeout=120,
                          capture_output=True)
    assert done.returncode == 0, f"{case} failed on QEMU"


def test_stores_beside_code_keep_the_compiled_loop(rv_asm, rv_env):
    """20000 trips storing into the code's page: the compiled loop runs on after
    each store instead of leaving for the interpreter every trip; memory,
    registers and instret as the interpreter's."""
    image, syms = rv_asm(BESIDE)
    runs = []
    for jit in (True, False):
        space, hart = rv_env.make_machine(image)
        hart.stop_on = {3}
        hart.jit = jit
        res = hart.run(10_000_000)
        assert res.cause == 3, res
        runs.append((hart, space.memory.read(syms["buf"], 512)))
    (jit_hart, jit_buf), (ref, ref_buf) = runs
    assert jit_buf == ref_buf
    assert [jit_hart.x[i] for i in range(32)] == [ref.x[i] for i in range(32)]
    assert jit_hart.instret == ref.instret
    stats = jit_hart._stats()
    assert stats["jit_regions"] > 0
    assert stats["jit_calls"] < 100, stats      # not one way out per store
