/* Test macros in the style of riscv-tests: gp holds the current case number;
 * a failing case exits through the SiFive test device with (gp << 16) | 0x3333. */
#define TESTDEV 0x100000

#define START                               \
    .section .text.init;                    \
    .globl _start;                          \
_start:                                     \
    la t0, default_trap;                    \
    csrw mtvec, t0;                         \
    li t0, (1 << 13);                       \
    csrs mstatus, t0;  /* FS = Initial */   \
    la sp, _stack_top;                      \
    li gp, 0;

#define PASS_FAIL                           \
pass:                                       \
    li t0, TESTDEV;                         \
    li t1, 0x5555;                          \
    sw t1, 0(t0);                           \
1:  j 1b;                                   \
fail:                                       \
    li t0, TESTDEV;                         \
    slli t1, gp, 16;                        \
    li t2, 0x3333;                          \
    or t1, t1, t2;                          \
    sw t1, 0(t0);                           \
1:  j 1b;                                   \
    .align 2;                               \
default_trap:                               \
    csrr t5, mcause;                        \
    j fail;

#define CHECK(reg, val)  li t6, val; bne reg, t6, fail
#define TEST_RR(n, inst, exp, v1, v2) li gp, n; li a1, v1; li a2, v2; inst a0, a1, a2; CHECK(a0, exp)
#define TEST_RI(n, inst, exp, v1, imm) li gp, n; li a1, v1; inst a0, a1, imm; CHECK(a0, exp)
#define TEST_R(n, inst, exp, v1) li gp, n; li a1, v1; inst a0, a1; CHECK(a0, exp)
