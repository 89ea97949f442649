"""mstatus.SUM switches data TLB sets instead of flushing the TLBs.

Linux sets SUM before each access to user memory (copy_to_user, get_user...) and
clears it after; each change flushed every TLB, so the kernel and the program
refilled theirs after every system call that moves data (md5sum reading a pipe:
26,000 flushes for 16 MiB).  S-mode with SUM now has TLB sets of its own (as
QEMU's MMU index for it): a change selects the other set (riscv_mmu.pxi,
tlb_select).
"""

from __future__ import annotations

from vmforge.accel.interp import StopReason

TRIPS = 1000

# Sv39: 0x80000000 is an identity gigapage for S; 0x40000000 maps the same RAM as
# user pages.  S-mode loads through the user mapping with SUM set, TRIPS times;
# then, SUM clear, the same load must fault.
PROGRAM = rf"""
    .option norvc
    la t0, root
    li t1, (0x80000 << 10) | 0xdf           # V R W X U A D: user gigapage
    sd t1, 8(t0)
    li t1, (0x80000 << 10) | 0xcf           # V R W X A D: supervisor gigapage
    sd t1, 16(t0)
    srli t0, t0, 12
    li t1, 8 << 60
    or t0, t0, t1
    csrw satp, t0
    li t0, 3 << 11
    csrc mstatus, t0
    li t0, 1 << 11                          # mret to S
    csrs mstatus, t0
    la t0, s_code
    csrw mepc, t0
    mret
s_code:
    la a1, value
    li t0, 0x40000000
    sub a1, a1, t0                          # value through the user mapping
    li s2, {TRIPS}
    li s3, 0
    li t2, 1 << 18
1:  csrs sstatus, t2
    ld a0, 0(a1)
    csrc sstatus, t2
    add s3, s3, a0
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
    ld a0, 0(a1)                            # SUM clear: a load page fault
    ebreak
    .balign 8
value: .dword 7
    .balign 4096
root: .fill 512, 8, 0
"""


def test_sum_changes_switch_tlb_sets(rv_asm, rv_env):
    image, _ = rv_asm(PROGRAM)
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {3, 13}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[19] == 7 * TRIPS
    # before: two flushes a trip
    assert hart._stats()["tlb_flushes"] < 10, hart._stats()
    hart.pc += 4
    res = hart.run(1_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 13, res
