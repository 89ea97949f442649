"""A compiled region headed at an instruction that crosses into the next page, entered
while the fetch TLB does not hold that page.

The region checks the next page's upper half through the fetch TLB and, when the
TLB does not hold the page, leaves at once for the run loop to run the instruction
(riscv_jit_xpage.pxi).  Headed there, it left at its own head having run nothing,
and the run loop entered it again, for good: a 2-hart Linux boot hung in 1 of 1-3
boots (one hart stuck at such a head in ``find_get_entry``, instret standing
still).  The loop now runs that instruction itself (riscv.pyx, ``run_alone``): its
fetch refills the TLB, and the region runs in full next time.

Run in a child process: before, ``run()`` never returned.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

TRIPS = 200

# cross (page A, offset 0xffe) -> page B: j body -> page C: the body.  In the
# second half of the trips the way back to cross goes through page D, 1 MiB after
# page B: its fetch pushes page B out of the direct-mapped fetch TLB, after the
# region at cross was compiled.
PROGRAM = rf"""
    .option norvc
    li s2, {TRIPS}
    li s3, {TRIPS // 2}
    li a0, 0
    j cross
    .balign 4096
    .skip 0xffe
cross:
    addi a0, a0, 3
page_b:
    j body
    .balign 4096
body:
    addi s2, s2, -1
    blt s2, s3, 1f
    j cross
1:  j page_d
    .balign 4096
    .skip 0x100000 - 0x2000
page_d:
    beqz s2, 2f
    la t0, cross                # (beyond a jal's reach)
    jr t0
2:  ebreak
"""

CHILD = textwrap.dedent("""
    import sys
    from vmforge.accel.interp import RiscvHart, StopReason
    from vmforge.memory import AddressSpace
    image = open(sys.argv[1], "rb").read()
    for jit in (True, False):
        space = AddressSpace()
        space.add_ram(0x80000000, 4 << 20)
        space.memory.load(0x80000000, image)
        hart = RiscvHart(space, pc=0x80000000)
        hart.jit = jit
        hart.stop_on = {3}
        res = hart.run(10_000_000)
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
        print(hart.x[10], hart.instret, hart._stats()["jit_regions"])
""")


def test_a_region_that_cannot_start_at_its_head_does_not_hang(rv_asm, tmp_path) -> None:
    image, syms = rv_asm(PROGRAM)
    assert syms["cross"] & 0xfff == 0xffe
    assert (syms["page_d"] >> 12) - (syms["page_b"] >> 12) == 256     # the same fetch-TLB slot
    path = tmp_path / "prog.bin"
    path.write_bytes(image)
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the hart looped at the region's head") from None
    assert out.returncode == 0, out.stderr
    compiled, interpreted = (tuple(map(int, line.split())) for line in out.stdout.split("\n")[:2])
    assert compiled[0] == 3 * TRIPS
    assert compiled[:2] == interpreted[:2], "the compiled run differs from the interpreter's"
    assert compiled[2] > 0, "nothing was compiled: the test tests nothing"
