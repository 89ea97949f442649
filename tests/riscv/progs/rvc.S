#include "test.h"
START
    .option rvc
    la s0, cdata
    /* basic compressed arithmetic (the assembler picks the c. forms) */
    li gp, 1
    c.li a0, -32
    CHECK(a0, -32)
    li gp, 2
    c.li a0, 31
    c.addi a0, -1
    CHECK(a0, 30)
    li gp, 3
    c.lui a0, 0xfffff       /* nzimm[17:12] = 0x3f -> sign-extended */
    CHECK(a0, 0xfffffffffffff000)
    li gp, 4
    c.lui a0, 1
    CHECK(a0, 0x1000)
    li gp, 5
    li a0, 0x7fffffff
    c.addiw a0, 1
    CHECK(a0, 0xffffffff80000000)
    li gp, 6
    li a0, 0x80000000
    li a1, 0x80000000
    c.addw a0, a1
    CHECK(a0, 0)
    li gp, 7
    li a0, 0
    li a1, 1
    c.subw a0, a1
    CHECK(a0, -1)
    li gp, 8
    li a0, 0x8000000000000000
    c.srai a0, 63
    CHECK(a0, -1)
    li gp, 9
    li a0, 0x8000000000000000
    c.srli a0, 63
    CHECK(a0, 1)
    li gp, 10
    li a0, 1
    c.slli a0, 63
    CHECK(a0, 0x8000000000000000)
    li gp, 11
    li a0, 0xff
    c.andi a0, -16
    CHECK(a0, 0xf0)
    li gp, 12
    li a0, 6; li a1, 3
    c.and a0, a1; CHECK(a0, 2)
    li a0, 6; c.or a0, a1; CHECK(a0, 7)
    li a0, 6; c.xor a0, a1; CHECK(a0, 5)
    li a0, 6; c.sub a0, a1; CHECK(a0, 3)
    li a0, 6; c.add a0, a1; CHECK(a0, 9)
    c.mv a2, a0; CHECK(a2, 9)
    /* stack-pointer forms */
    li gp, 20
    mv s1, sp
    c.addi16sp sp, -64
    sub a0, s1, sp; CHECK(a0, 64)
    c.addi4spn a0, sp, 8
    sub a0, a0, sp; CHECK(a0, 8)
    li a1, 0x1122334455667788
    c.sdsp a1, 8(sp)
    c.ldsp a2, 8(sp)
    bne a1, a2, fail
    c.swsp a1, 16(sp)
    c.lwsp a2, 16(sp)
    CHECK(a2, 0x55667788)
    li a1, 0x80000000
    c.swsp a1, 20(sp)
    c.lwsp a2, 20(sp)
    CHECK(a2, 0xffffffff80000000)
    c.addi16sp sp, 64
    /* register-based loads and stores */
    li gp, 21
    li a1, -2
    c.sd a1, 8(s0)
    c.ld a2, 8(s0)
    CHECK(a2, -2)
    c.sw a1, 0(s0)
    c.lw a2, 0(s0)
    CHECK(a2, -2)
    /* control flow */
    li gp, 30
    li a0, 0
    c.beqz a0, 1f
    j fail
1:  c.bnez a0, fail_far
    li gp, 31
    la t0, 2f
    c.jalr t0
3:  j fail
2:  la t1, 3b
    bne ra, t1, fail          /* link = pc + 2 */
    li gp, 32
    la t0, 4f
    c.jr t0
    j fail
4:  c.j 5f
    j fail
5:  /* a 32-bit instruction at a 2-byte aligned address */
    li gp, 33
    .half 0x0001              /* c.nop */
    addi a0, zero, 17
    CHECK(a0, 17)
    /* reserved compressed encodings are illegal, mtval = the 16 bits */
    li gp, 40
    la t0, trap40; csrw mtvec, t0
    la s2, 1f
1:  .half 0x0000              /* all-zero: illegal */
    j fail
    .align 2
trap40:
    csrr a0, mcause; CHECK(a0, 2)
    csrr a0, mtval; CHECK(a0, 0)
    csrr a0, mepc; bne a0, s2, fail
    li gp, 41
    la t0, trap41; csrw mtvec, t0
    .half 0x2001              /* c.addiw x0, 0: reserved */
    j fail
    .align 2
trap41:
    csrr a0, mtval; CHECK(a0, 0x2001)
    li gp, 42
    la t0, trap42; csrw mtvec, t0
    .half 0x4002              /* c.lwsp x0: reserved */
    j fail
    .align 2
trap42:
    csrr a0, mtval; CHECK(a0, 0x4002)
    li gp, 43
    la t0, trap43; csrw mtvec, t0
    .half 0x8002              /* c.jr x0: reserved */
    j fail
    .align 2
trap43:
    csrr a0, mtval; CHECK(a0, 0x8002)
    li gp, 44
    la t0, trap44; csrw mtvec, t0
    .half 0x6101              /* c.addi16sp sp, 0: reserved */
    j fail
    .align 2
trap44:
    csrr a0, mtval; CHECK(a0, 0x6101)
    li gp, 45
    la t0, trap45; csrw mtvec, t0
    .half 0x9c41              /* c.subw with funct 10 (reserved in RV64) */
    j fail
    .align 2
trap45:
    csrr a0, mcause; CHECK(a0, 2)
    li gp, 46
    la t0, trap46; csrw mtvec, t0
    c.ebreak
    j fail
    .align 2
trap46:
    csrr a0, mcause; CHECK(a0, 3)
    j pass
fail_far:
    j fail
PASS_FAIL
    .data
    .align 4
cdata: .space 64
