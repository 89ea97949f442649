#include "test.h"
START
    la s0, amo_data
    /* lr/sc success */
    li gp, 1
    li t0, 5; sd t0, 0(s0)
    lr.d a0, (s0)
    CHECK(a0, 5)
    li t1, 9
    sc.d a1, t1, (s0)
    CHECK(a1, 0)
    ld a0, 0(s0); CHECK(a0, 9)
    /* sc without a reservation fails and stores nothing */
    li gp, 2
    sc.d a1, t1, (s0)
    CHECK(a1, 1)
    /* a store to the reserved granule breaks the reservation */
    li gp, 3
    lr.d a0, (s0)
    sd zero, 0(s0)
    li t1, 77
    sc.d a1, t1, (s0)
    CHECK(a1, 1)
    ld a0, 0(s0); CHECK(a0, 0)
    /* sc to another address than the reservation fails */
    li gp, 4
    lr.d a0, (s0)
    addi t4, s0, 8
    sc.d a1, t1, (t4)
    bnez a1, 1f
    j fail
1:  /* lr.w sign-extends */
    li gp, 5
    li t0, 0x80000000; sw t0, 16(s0)
    lr.w a0, (s0)
    la t2, amo_data + 16
    lr.w a0, (t2)
    CHECK(a0, 0xffffffff80000000)
    sc.w a1, zero, (t2)
    CHECK(a1, 0)
    lw a0, 16(s0); CHECK(a0, 0)
    /* AMOs return the old value */
    li gp, 10
    li t0, 10; sd t0, 0(s0)
    li t1, 3
    amoadd.d a0, t1, (s0); CHECK(a0, 10)
    ld a0, 0(s0); CHECK(a0, 13)
    li gp, 11
    amoswap.d a0, t1, (s0); CHECK(a0, 13)
    ld a0, 0(s0); CHECK(a0, 3)
    li gp, 12
    li t1, 6
    amoxor.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, 5)
    amoor.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, 7)
    amoand.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, 6)
    li gp, 13
    li t1, -1
    amomin.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, -1)
    li t1, 4
    amomax.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, 4)
    li t1, -1
    amominu.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, 4)
    amomaxu.d a0, t1, (s0); ld a0, 0(s0); CHECK(a0, -1)
    /* W forms: 32-bit memory, sign-extended results, signed/unsigned compares on 32 bits */
    li gp, 20
    li t0, 0x7fffffff; sw t0, 16(s0); sw zero, 20(s0)
    li t1, 1
    amoadd.w a0, t1, (t2); CHECK(a0, 0x7fffffff)
    lw a0, 16(s0); CHECK(a0, 0xffffffff80000000)
    lw a0, 20(s0); CHECK(a0, 0)           /* neighbour untouched */
    li gp, 21
    li t1, 0x100000001                     /* low 32 bits: 1 */
    amomin.w a0, t1, (t2); CHECK(a0, 0xffffffff80000000)
    lw a0, 16(s0); CHECK(a0, 0xffffffff80000000)
    amominu.w a0, t1, (t2)
    lw a0, 16(s0); CHECK(a0, 1)
    li t1, 0xfffffffe
    amomax.w a0, t1, (t2); lw a0, 16(s0); CHECK(a0, 1)
    amomaxu.w a0, t1, (t2); lw a0, 16(s0); CHECK(a0, 0xfffffffffffffffe)
    amoswap.w a0, zero, (t2); CHECK(a0, 0xfffffffffffffffe)
    /* misaligned AMO: store/AMO address misaligned (cause 6) */
    li gp, 30
    la t0, trap30; csrw mtvec, t0
    addi t3, s0, 1
    amoadd.d a0, t1, (t3)
    j fail
    .align 2
trap30:
    csrr a0, mcause; CHECK(a0, 6)
    csrr a0, mtval; bne a0, t3, fail
    /* misaligned LR: load address misaligned (cause 4) */
    li gp, 31
    la t0, trap31; csrw mtvec, t0
    lr.w a0, (t3)
    j fail
    .align 2
trap31:
    csrr a0, mcause; CHECK(a0, 4)
    j pass
PASS_FAIL
    .data
    .align 4
amo_data: .space 64
