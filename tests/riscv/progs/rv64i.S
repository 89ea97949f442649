#include "test.h"
    .option norvc
START
    /* arithmetic and wrap-around */
    TEST_RR(1, add, 0, 0xffffffffffffffff, 1)
    TEST_RR(2, sub, 0x8000000000000000, 0x7fffffffffffffff, 0xffffffffffffffff)
    TEST_RI(3, addi, 0xfffffffffffff800, 0, -2048)
    TEST_RI(4, addi, 0x7ff, 0, 2047)
    TEST_RI(5, slti, 1, -1, 0)
    TEST_RI(6, sltiu, 0, -1, 0)
    TEST_RI(7, sltiu, 1, 0, -1)          /* imm sign-extended, compared unsigned */
    TEST_RR(8, slt, 1, 0x8000000000000000, 0)
    TEST_RR(9, sltu, 0, 0x8000000000000000, 0)
    TEST_RI(10, xori, 0xffffffffffffff00, 0xff, -1)
    TEST_RI(11, ori, 0xfffffffffffff801, 1, -2048)
    TEST_RI(12, andi, 0x123, 0x123, 0x7ff)
    /* shifts: 6-bit amounts, register amounts masked */
    TEST_RI(13, slli, 0x8000000000000000, 1, 63)
    TEST_RI(14, srli, 1, 0x8000000000000000, 63)
    TEST_RI(15, srai, 0xffffffffffffffff, 0x8000000000000000, 63)
    TEST_RR(16, sll, 2, 1, 65)
    TEST_RR(17, srl, 0x4000000000000000, 0x8000000000000000, 0x41)
    TEST_RR(18, sra, 0xc000000000000000, 0x8000000000000000, 0xffffffffffffffc1)
    /* W ops sign-extend their 32-bit results */
    TEST_RI(20, addiw, 0xffffffff80000000, 0x7fffffff, 1)
    TEST_RI(21, addiw, 0x7fffffff, 0x17fffffff, 0)   /* sext.w */
    TEST_RR(22, addw, 0, 0xffffffff, 1)
    TEST_RR(23, subw, 0xffffffff80000000, 0, 0x80000000)
    TEST_RI(24, slliw, 0xffffffff80000000, 1, 31)
    TEST_RI(25, srliw, 1, 0x80000000, 31)
    TEST_RI(26, srliw, 0x7fffffff, 0xffffffffffffffff, 1)
    TEST_RI(27, sraiw, 0xffffffffffffffff, 0x80000000, 31)
    TEST_RR(28, sllw, 0xffffffff80000000, 1, 63)     /* amount & 31 */
    TEST_RR(29, srlw, 1, 0x80000000, 0x3f)
    TEST_RR(30, sraw, 0xfffffffffffffffe, 0xfffffffffffffffc, 33)
    TEST_RI(31, sraiw, 0x12345678, 0xffffffff12345678, 0)
    /* lui / auipc */
    li gp, 32
    lui a0, 0x80000
    CHECK(a0, 0xffffffff80000000)
    li gp, 33
1:  auipc a0, 0
    la a1, 1b
    bne a0, a1, fail
    li gp, 34
2:  auipc a0, 0xfffff
    la a1, 2b
    sub a0, a1, a0
    CHECK(a0, 0x1000)
    /* loads and stores: widths and sign extension */
    la s0, data
    li gp, 40
    lb a0, 0(s0); CHECK(a0, 0xffffffffffffff80)
    li gp, 41
    lbu a0, 0(s0); CHECK(a0, 0x80)
    li gp, 42
    lh a0, 0(s0); CHECK(a0, 0xffffffffffff8180)
    li gp, 43
    lhu a0, 0(s0); CHECK(a0, 0x8180)
    li gp, 44
    lw a0, 0(s0); CHECK(a0, 0xffffffff83828180)
    li gp, 45
    lwu a0, 0(s0); CHECK(a0, 0x83828180)
    li gp, 46
    ld a0, 0(s0); CHECK(a0, 0x8786858483828180)
    li gp, 47
    li a1, 0x1122334455667788
    sd a1, 8(s0); sw a1, 16(s0); sh a1, 20(s0); sb a1, 22(s0)
    ld a0, 8(s0); CHECK(a0, 0x1122334455667788)
    li gp, 48
    ld a0, 16(s0); li t6, 0x0088778855667788; li t0, 0x00ffffffffffffff; and a0, a0, t0; bne a0, t6, fail
    li gp, 49

    la s1, data + 8
    lbu a0, -8(s1); CHECK(a0, 0x80)
    /* misaligned accesses are emulated */
    li gp, 50
    ld a0, 1(s0); CHECK(a0, 0x8887868584838281)
    li gp, 51
    li a1, 0xa1a2a3a4
    sw a1, 33(s0)
    lwu a0, 33(s0); CHECK(a0, 0xa1a2a3a4)
    li gp, 52
    lh a0, 35(s0); CHECK(a0, 0xffffffffffffa1a2)
    /* x0 stays zero */
    li gp, 53
    addi x0, x0, 5
    lw x0, 0(s0)
    mv a0, x0; CHECK(a0, 0)
    /* branches */
    li gp, 60
    li a1, -1; li a2, 1
    blt a1, a2, 1f; j fail
1:  bltu a1, a2, fail
    bge a2, a1, 1f; j fail
1:  bgeu a2, a1, fail
    beq a1, a1, 1f; j fail
1:  bne a1, a1, fail
    /* jal / jalr link and target, jalr clears bit 0 */
    li gp, 61
    jal ra, 1f
2:  j fail
1:  la t0, 2b
    bne ra, t0, fail
    li gp, 62
    la t0, 3f + 1
    jalr t1, 0(t0)
4:  j fail
3:  la t0, 4b
    bne t1, t0, fail
    li gp, 63
    la t0, 5f
    jalr t0, 0(t0)       /* rd == rs1: target read before the link is written */
    j fail
5:  /* fence and pause are no-ops */
    fence
    fence rw, rw
    .word 0x0100000f     /* pause */
    fence.i
    j pass
PASS_FAIL
    .data
    .align 4
data:
    .byte 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88
    .space 64
