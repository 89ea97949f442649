"""fence.i keeps the hart's decoded and compiled code, yet sees code written
behind the hart's back.

A hart's own stores into code invalidate what they hit as they happen
(test_smc_invalidation.py), so fence.i need not drop every decoded page any
more.  What it must still catch is code written by someone else: a device's
DMA (virtio-blk reading a file into RAM writes guest memory directly, as
``GuestMemory.write`` does here) and another hart's stores.  After fence.i the
hart runs the new code; its other pages stay decoded and compiled (no code
flush).
"""

from __future__ import annotations

from vmforge.accel.interp import StopReason

# runs g hot (compiled), stops (ebreak), then: fence.i, call g again, stop
PROGRAM = r"""
    .option norvc
    la s7, g
    li s2, 100
1:  jalr ra, 0(s7)
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
    fence.i
    jalr ra, 0(s7)
    ebreak
new: li a0, 22              # the code written later over g
    ret
    .balign 4096
g:  li a0, 11
    ret
"""

# the other hart: copies ``new`` over ``g`` with stores, stops
WRITER = r"""
    .option norvc
    la t0, new
    la t1, g
    lw t2, 0(t0)
    sw t2, 0(t1)
    ebreak
"""


def _first_part(rv_env, image: bytes):
    space, hart = rv_env.make_machine(image)
    hart.jit = True                 # (a test of the compiler, VMFORGE_JIT=0 or not)
    hart.stop_on = {3}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[10] == 11
    return space, hart


def _second_part(hart) -> dict[str, int]:
    before = hart._stats()
    hart.pc += 4
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    return before


def test_fence_i_sees_code_written_by_dma(rv_asm, rv_env):
    image, syms = rv_asm(PROGRAM)
    space, hart = _first_part(rv_env, image)
    assert hart._stats()["jit_regions"] > 0
    new = space.memory.read(syms["new"], 4)
    space.memory.write(syms["g"], new)          # as a device's DMA: not through the hart
    before = _second_part(hart)
    assert hart.x[10] == 22, "fence.i did not see the code a device wrote"
    after = hart._stats()
    assert after["code_flushes"] == before["code_flushes"], "fence.i dropped all code"


def test_fence_i_sees_code_another_hart_stored(rv_asm, rv_env):
    image, syms = rv_asm(PROGRAM)
    space, hart = _first_part(rv_env, image)
    writer_image, _ = rv_asm(WRITER.replace("la t0, new", f"li t0, {syms['new']:#x}")
                             .replace("la t1, g", f"li t1, {syms['g']:#x}"))
    scratch = syms["g"] + 0x1000            # the writer's own code, on a page of its own
    space.memory.write(scratch, writer_image)
    other = hart.sibling(1)
    other.stop_on = {3}
    other.pc = scratch
    res = other.run(1_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert space.memory.read(syms["g"], 4) == space.memory.read(syms["new"], 4)
    before = _second_part(hart)
    assert hart.x[10] == 22, "fence.i did not see the code another hart stored"
    assert hart._stats()["code_flushes"] == before["code_flushes"]


def test_fence_i_keeps_code_nobody_wrote(rv_asm, rv_env):
    """Nothing changed: after fence.i, g runs from its compiled region still
    (no new region compiled for it, no code flush)."""
    image, _syms = rv_asm(PROGRAM)
    _space, hart = _first_part(rv_env, image)
    before = _second_part(hart)
    assert hart.x[10] == 11
    after = hart._stats()
    assert after["code_flushes"] == before["code_flushes"]
    assert after["jit_regions"] == before["jit_regions"]
