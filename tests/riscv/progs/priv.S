#include "test.h"
#define SET_MTVEC(lbl) la t0, lbl; csrw mtvec, t0
#define SET_STVEC(lbl) la t0, lbl; csrw stvec, t0
START
    /* ecall from M: cause 11, mepc = the ecall */
    li gp, 1
    SET_MTVEC(t1_h)
    la s2, 1f
1:  ecall
    j fail
    .align 2
t1_h:
    csrr a0, mcause; CHECK(a0, 11)
    csrr a0, mepc; bne a0, s2, fail
    csrr a0, mtval; CHECK(a0, 0)
    /* unknown CSR: illegal instruction, mtval = the instruction bits */
    li gp, 2
    SET_MTVEC(t2_h)
    .word 0x80002573          /* csrr a0, 0x800 */
    j fail
    .align 2
t2_h:
    csrr a0, mcause; CHECK(a0, 2)
    csrr a0, mtval; CHECK(a0, 0x80002573)
    /* write to a read-only CSR */
    li gp, 3
    SET_MTVEC(t3_h)
    csrr a0, mhartid; CHECK(a0, 0)
    csrw mhartid, zero
    j fail
    .align 2
t3_h:
    csrr a0, mcause; CHECK(a0, 2)
    /* misa: RV64 IMAFDC + S + U */
    li gp, 4
    csrr a0, misa
    CHECK(a0, 0x800000000014112d)
    /* ebreak: cause 3 */
    li gp, 5
    SET_MTVEC(t5_h)
    ebreak
    j fail
    .align 2
t5_h:
    csrr a0, mcause; CHECK(a0, 3)
    /* unknown opcode */
    li gp, 6
    SET_MTVEC(t6_h)
    .word 0xffffffff
    j fail
    .align 2
t6_h:
    csrr a0, mcause; CHECK(a0, 2)
    csrr a0, mtval; CHECK(a0, 0xffffffff)
    /* mret to U; U-mode ecall is cause 8 and MPP reads U afterwards */
    li gp, 10
    SET_MTVEC(t10_h)
    li t0, (3 << 11); csrc mstatus, t0       /* MPP = U */
    la t0, 1f; csrw mepc, t0
    mret
1:  ecall
    j fail
    .align 2
t10_h:
    csrr a0, mcause; CHECK(a0, 8)
    csrr a0, mstatus; srli a0, a0, 11; andi a0, a0, 3; CHECK(a0, 0)
    /* U-mode reading an M CSR: illegal, mtval = bits */
    li gp, 11
    SET_MTVEC(t11_h)
    la t0, 1f; csrw mepc, t0
    mret
1:  csrr a0, mstatus
    j fail
    .align 2
t11_h:
    csrr a0, mcause; CHECK(a0, 2)
    csrr a0, mtval; CHECK(a0, 0x30002573)
    /* counters from U need mcounteren and scounteren */
    li gp, 12
    SET_MTVEC(t12_h)
    csrw mcounteren, zero
    la t0, 1f; csrw mepc, t0
    mret
1:  rdcycle a0
    j fail
    .align 2
t12_h:
    csrr a0, mcause; CHECK(a0, 2)
    li gp, 13
    SET_MTVEC(t13_h)
    li t0, 7; csrw mcounteren, t0; csrw scounteren, t0
    la t0, 1f; csrw mepc, t0
    mret
1:  rdinstret a0
    rdinstret a1
    sub a2, a1, a0
    ecall
    .align 2
t13_h:
    csrr a0, mcause; CHECK(a0, 8)
    CHECK(a2, 1)
    /* delegation: U ecall delegated to S; S ecall goes to M */
    li gp, 20
    li t0, (1 << 8); csrw medeleg, t0
    SET_STVEC(s20_h)
    SET_MTVEC(t20_h)
    li t0, (3 << 11); csrc mstatus, t0
    li t0, (1 << 11); csrs mstatus, t0       /* MPP = S */
    la t0, s20_code; csrw mepc, t0
    mret
    .align 2
s20_code:                                    /* in S: sret to U */
    li t0, (1 << 8); csrc sstatus, t0        /* SPP = U */
    la t0, 1f; csrw sepc, t0
    sret
1:  ecall                                    /* from U -> S */
    j fail
    .align 2
s20_h:
    csrr a0, scause; CHECK(a0, 8)
    csrr a0, sstatus; andi a0, a0, (1 << 8); CHECK(a0, 0)   /* SPP = U */
    li gp, 21
    ecall                                    /* from S -> M, cause 9 */
    j fail
    .align 2
t20_h:
    csrr a0, mcause; CHECK(a0, 9)
    csrr a0, mstatus; srli a0, a0, 11; andi a0, a0, 3; CHECK(a0, 1)
    csrw medeleg, zero
    /* S-mode privileged traps: TSR, TW, TVM */
    li gp, 22
    SET_MTVEC(t22_h)
    li t0, (1 << 22); csrs mstatus, t0       /* TSR */
    li t0, (3 << 11); csrc mstatus, t0
    li t0, (1 << 11); csrs mstatus, t0
    la t0, 1f; csrw mepc, t0
    mret
1:  sret
    j fail
    .align 2
t22_h:
    csrr a0, mcause; CHECK(a0, 2)
    li t0, (1 << 22); csrc mstatus, t0
    li gp, 23
    SET_MTVEC(t23_h)
    li t0, (1 << 20); csrs mstatus, t0       /* TVM */
    li t0, (1 << 11); csrs mstatus, t0
    la t0, 1f; csrw mepc, t0
    mret
1:  csrr a0, satp
    j fail
    .align 2
t23_h:
    csrr a0, mcause; CHECK(a0, 2)
    li t0, (1 << 20); csrc mstatus, t0
    li gp, 24
    SET_MTVEC(t24_h)
    li t0, (1 << 21); csrs mstatus, t0       /* TW */
    li t0, (1 << 11); csrs mstatus, t0
    la t0, 1f; csrw mepc, t0
    mret
1:  wfi
    j fail
    .align 2
t24_h:
    csrr a0, mcause; CHECK(a0, 2)
    li t0, (1 << 21); csrc mstatus, t0
    /* a supervisor timer interrupt set by M software, taken in M, vectored */
    li gp, 30
    la t0, vec_table; ori t0, t0, 1; csrw mtvec, t0
    li t0, (1 << 5); csrw mie, t0            /* STIE */
    csrs mip, t0                             /* STIP pending */
    csrr a0, mip; andi a0, a0, (1 << 5); CHECK(a0, 32)
    li s3, 0
    csrsi mstatus, 8                         /* MIE: taken right after this csrs */
    CHECK(s3, 1)
    csrr a0, mcause; CHECK(a0, 0x8000000000000005)
    /* delegated SSIP taken in S when SIE is set, not in M */
    li gp, 31
    csrw mie, zero
    csrci mstatus, 8
    li t0, (1 << 5); csrc mip, t0
    li t0, 2; csrw mideleg, t0; csrw mie, t0
    SET_STVEC(s31_h)
    li t0, (3 << 11); csrc mstatus, t0
    li t0, (1 << 11); csrs mstatus, t0
    la t0, s31_code; csrw mepc, t0
    li t0, 2; csrs mip, t0                   /* SSIP pending, SIE clear */
    SET_MTVEC(fs_test)
    mret
    .align 2
s31_code:
    li s3, 5
    csrr a0, sip; CHECK(a0, 2)
    csrsi sstatus, 2                         /* SIE: taken now */
    j fail
    .align 2
s31_h:
    csrr a0, scause; CHECK(a0, 0x8000000000000001)
    CHECK(s3, 5)
    csrr a0, sstatus; andi a0, a0, 0x22; CHECK(a0, 0x20)   /* SPIE=1 SIE=0 */
    li t0, 2; csrc sip, t0
    csrr a0, sip; CHECK(a0, 0)
    /* wfi with an interrupt pending (even disabled) does not stop */
    li gp, 32
    li t0, 2; csrs sip, t0
    csrci sstatus, 2
    wfi
    csrr a0, scause; CHECK(a0, 0x8000000000000001)
    /* FS: off -> FP instructions illegal; dirty after an FP write, SD set */
    li gp, 34
    ecall                                    /* back to M, at fs_test */
    j fail
    .align 2
fs_test:
    csrr a0, mcause; CHECK(a0, 9)
    SET_MTVEC(t35_h)
    li t0, (3 << 13); csrc mstatus, t0       /* FS = Off */
    li gp, 35
    fmv.d.x fa0, zero
    j fail
    .align 2
t35_h:
    csrr a0, mcause; CHECK(a0, 2)
    /* satp: unsupported mode is ignored, Sv48 accepted */
    li gp, 37
    li t0, (9 << 60) | 0x1234
    csrw satp, t0
    csrr a0, satp; bne a0, t0, fail
    li t1, (10 << 60)
    csrw satp, t1
    csrr a0, satp; bne a0, t0, fail
    csrw satp, zero
    li gp, 36
    SET_MTVEC(default_trap)
    li t0, (1 << 13); csrs mstatus, t0       /* Initial */
    csrr a0, mstatus; bltz a0, fail          /* SD clear */
    fmv.d.x fa0, zero
    csrr a0, mstatus; bgez a0, fail          /* SD set */
    srli a0, a0, 13; andi a0, a0, 3; CHECK(a0, 3)
    j pass
    .align 2
vec_table:
    .option push
    .option norvc
    j fail                                   /* exceptions land here */
    j fail
    j fail
    j fail
    j fail
    j sti_h                                  /* cause 5 */
    .option pop
    .align 2
sti_h:
    li s3, 1
    li t0, (1 << 5); csrc mip, t0
    mret
PASS_FAIL
