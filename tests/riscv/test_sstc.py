"""Sstc (``stimecmp``, menvcfg.STCE) against QEMU 7.2.

One program observes, in M-mode: menvcfg.STCE, ``stimecmp`` read back, STIP
following ``time >= stimecmp`` while STCE is set and not writable in ``mip``
then (writable again with STCE clear); in S-mode: ``stimecmp`` refused without
mcounteren.TM or without STCE, allowed with both; and a supervisor timer
interrupt taken through ``stvec`` when ``time`` reaches an armed ``stimecmp``
while the hart waits in ``wfi`` (vmforge's cluster wakes it at that guest time).
Its observations go to the UART; vmforge's (interpreter and compiled tier)
must equal those of ``qemu-system-riscv64 -M virt -bios none``.
"""

from __future__ import annotations

import pytest
from rv_uart import attach_uart, qemu_uart_output

from vmforge.accel.cluster import HartCluster
from vmforge.migration.hart import HART_STATE_VERSION, load_hart, save_hart
from vmforge.migration.record import StateError

RAM = 0x8000_0000

PROGRAM = r"""
    .option norvc
    la t0, mtrap
    csrw mtvec, t0
    li t0, -1
    csrw pmpaddr0, t0           # (QEMU: S-mode needs a PMP rule)
    li t0, 0x1f
    csrw pmpcfg0, t0
    la s1, out
    li s10, 1
    slli s10, s10, 63           # menvcfg.STCE
    # -- M-mode ----------------------------------------------------------------
    csrw menvcfg, zero
    csrr t0, menvcfg
    srli t0, t0, 63
    sd t0, 0(s1)                # 0: STCE clear
    csrs menvcfg, s10
    csrr t0, menvcfg
    srli t0, t0, 63
    sd t0, 8(s1)                # 1: STCE set
    li t0, -1
    csrw stimecmp, t0
    csrr t1, stimecmp
    sd t1, 16(s1)               # 2: stimecmp read back
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 24(s1)               # 3: STIP low (stimecmp far away)
    csrw stimecmp, zero
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 32(s1)               # 4: STIP high (stimecmp passed)
    li t1, 32
    csrc mip, t1
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 40(s1)               # 5: still high: not writable under STCE
    li t0, -1
    csrw stimecmp, t0
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 48(s1)               # 6: low again
    csrs mip, t1
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 56(s1)               # 7: still low
    csrc menvcfg, s10
    csrs mip, t1
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 64(s1)               # 8: STCE clear: software sets STIP
    csrc mip, t1
    csrr t0, mip
    andi t0, t0, 32
    sd t0, 72(s1)               # 9: ... and clears it
    addi s1, s1, 80
    # -- to S-mode ---------------------------------------------------------------
    csrw mcounteren, zero
    csrs menvcfg, s10
    li t0, 3 << 11
    csrc mstatus, t0
    li t0, 1 << 11
    csrs mstatus, t0
    la t0, smode
    csrw mepc, t0
    mret

smode:
    li s11, 0
    li t0, 0x55
    csrr t0, stimecmp           # TM clear, STCE set: illegal
    sd t0, 0(s1)
    sd s11, 8(s1)
    li a0, 0
    li a1, 2                    # mcounteren.TM
    li a2, 0                    # menvcfg: STCE clear
    ecall
    li s11, 0
    li t0, 0x55
    csrr t0, stimecmp           # TM set, STCE clear: illegal
    sd t0, 16(s1)
    sd s11, 24(s1)
    li a0, 0
    li a1, 2
    mv a2, s10
    ecall
    li s11, 0
    li t1, 0x1234
    csrw stimecmp, t1           # both set: allowed
    csrr t0, stimecmp
    sd t0, 32(s1)
    sd s11, 40(s1)
    addi s1, s1, 48
    # a supervisor timer interrupt out of wfi (STI delegated by the M code below)
    li a0, 2
    ecall
    la t0, strap
    csrw stvec, t0
    li t0, 32
    csrs sie, t0
    csrsi sstatus, 2
    rdtime t1
    addi s3, t1, 500
    csrw stimecmp, s3
1:  wfi
    j 1b

strap:
    csrr t0, scause
    sd t0, 0(s1)                # interrupt 5
    rdtime t1
    sltu t0, t1, s3
    sd t0, 8(s1)                # 0: time had reached stimecmp
    li t0, -1
    csrw stimecmp, t0
    csrr t0, sip
    andi t0, t0, 32
    sd t0, 16(s1)               # STIP low again
    addi s1, s1, 24
    li a0, 1
    ecall

mtrap:
    csrr t3, mcause
    li t4, 9
    beq t3, t4, mcall
    mv s11, t3                  # the cause of an illegal instruction: skip it
    csrr t3, mepc
    addi t3, t3, 4
    csrw mepc, t3
    mret
mcall:
    csrr t3, mepc
    addi t3, t3, 4
    csrw mepc, t3
    li t4, 1
    beq a0, t4, finish
    li t4, 2
    beq a0, t4, deleg
    csrw mcounteren, a1
    csrw menvcfg, a2
    mret
deleg:
    li t4, 32
    csrw mideleg, t4
    csrw mie, t4
    mret
finish:
    la s0, out
    li s2, 0x10000000
dump:
    lbu t0, 0(s0)
    sb t0, 0(s2)
    addi s0, s0, 1
    bne s0, s1, dump
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
2:  j 2b
    .balign 8
out:
"""
N_WORDS = 10 + 6 + 3


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


def run_vmforge(rv_env, image: bytes, jit: bool) -> tuple[HartCluster, list[int]]:
    """The program on a one-hart cluster (instruction-counted time, idle warped)."""
    space, _hart = rv_env.make_machine(image)
    uart = attach_uart(space)
    cluster = HartCluster(space, 1)
    cluster.reset(RAM)
    cluster.harts[0].jit = jit
    with pytest.raises(rv_env.ProgramExit) as done:
        for _ in range(1000):
            cluster.run_slice()
    assert done.value.value == 0x5555
    return cluster, words(bytes(uart.out))


@pytest.fixture(scope="module")
def qemu_words(rv_asm, tmp_path_factory) -> list[int]:
    image, _syms = rv_asm(PROGRAM)
    return words(qemu_uart_output(image, tmp_path_factory.mktemp("sstc")))


@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "interpreter"])
def test_sstc_matches_qemu(rv_asm, rv_env, qemu_words, jit):
    image, _syms = rv_asm(PROGRAM)
    _cluster, mine = run_vmforge(rv_env, image, jit)
    assert len(qemu_words) == N_WORDS
    assert mine == qemu_words
    # the interrupt came out of wfi: the cluster moved time on to stimecmp
    assert qemu_words[-3] == (1 << 63) | 5


def test_sstc_off_makes_stimecmp_illegal(rv_asm, rv_env):
    """``ext_sstc`` off: stimecmp is no CSR, menvcfg.STCE reads 0."""
    image, syms = rv_asm("    li t0, -1\n    csrw menvcfg, t0\n    csrr a0, menvcfg\n"
                         "csr: csrr a1, stimecmp\n")
    for on in (True, False):
        _space, hart = rv_env.make_machine(image)
        hart.ext_sstc = on
        hart.stop_on = {2}
        res = hart.run(10)
        assert (hart.x[10] >> 63) == on
        if on:
            assert res.pc != syms["csr"] or res.cause != 2
        else:
            assert res.cause == 2 and hart.pc == syms["csr"]


def test_hart_record_carries_stimecmp(rv_asm, rv_env):
    """Save/restore: stimecmp and menvcfg.STCE go with the hart (record version 2,
    a version 1 record is refused)."""
    image, _syms = rv_asm("    li t0, 1\n    slli t0, t0, 63\n    csrs menvcfg, t0\n"
                          "    li t1, 0x123456789\n    csrw stimecmp, t1\n    ebreak\n")
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {3}
    assert hart.run(100).cause == 3
    rec = save_hart(hart)
    assert rec["csrs"]["stimecmp"] == 0x123456789
    _space2, other = rv_env.make_machine(image)
    load_hart(other, rec)
    assert other.csr(0x14D) == 0x123456789 and other.csr("menvcfg") >> 63 == 1
    assert HART_STATE_VERSION == 2
    old = dict(rec, version=1)
    with pytest.raises(StateError):
        load_hart(other, old)


def test_rearmed_stimecmp_raises_no_stale_interrupt(rv_asm, rv_env):
    """Host time (the timers sampled every so many instructions): STIP seen high,
    then stimecmp moved far away and the interrupt enabled: no interrupt."""
    image, _syms = rv_asm(r"""
    la t0, irq
    csrw mtvec, t0
    li a0, 0
    li t0, 1
    slli t0, t0, 63
    csrs menvcfg, t0
    csrw stimecmp, zero
    csrr a1, mip                # STIP high
    li t0, -1
    csrw stimecmp, t0
    li t0, 32
    csrs mie, t0
    csrsi mstatus, 8
    nop
    nop
    ebreak
    .balign 4
irq:
    li a0, 1
    ebreak
""")
    _space, hart = rv_env.make_machine(image)
    hart.use_host_clock(0, 100)
    hart.stop_on = {3}
    assert hart.run(1000).cause == 3
    assert hart.x[11] & 32 and hart.x[10] == 0 and hart.csr("mcause") == 0
