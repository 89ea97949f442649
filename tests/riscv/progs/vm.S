#include "test.h"
/* Sv39 and Sv48: walks, permissions, A/D bits, page faults, sfence.vma, MPRV.
 * S-mode code runs on an identity gigapage at 0x80000000; faults go to M
 * (not delegated), whose handler checks cause/tval against s4/s5, counts in
 * s6 and resumes after the faulting (4-byte) instruction. */
#define PTE(reg, lbl, flags) la reg, lbl; srli reg, reg, 12; slli reg, reg, 10; ori reg, reg, flags
#define EXPECT_FAULT(cause, addr) li s4, cause; li s5, addr; addi s7, s6, 1
#define FAULTED bne s6, s7, fail
#define V 1
#define R 2
#define W 4
#define X 8
#define U 16
#define A 64
#define D 128
START
    .option norvc

    la t0, m_handler; csrw mtvec, t0
    li s6, 0
    /* root (level 2): [1] -> l1, [2] = identity gigapage at 0x80000000, [3] = misaligned */
    la s0, root
    la s1, l1
    la s2, l0
    PTE(t0, l1, V); sd t0, 8(s0)
    li t0, (0x80000 << 10) | V | R | W | X | A | D; sd t0, 16(s0)
    li t0, (0x80001 << 10) | V | R | A; sd t0, 24(s0)
    PTE(t0, l0, V); sd t0, 0(s1)
    li t0, (0x80000 << 10) | V | R | A; sd t0, 8(s1)   /* 0x40200000: 2 MiB megapage -> 0x80000000 */
    li t0, (0x80001 << 10) | V | R | A; sd t0, 16(s1)  /* 0x40400000: misaligned megapage */
    PTE(t0, page_a, V | R | W); sd t0, 0(s2)        /* 0x40000000: A, D clear */
    PTE(t0, page_a, V | R | A); sd t0, 8(s2)        /* 0x40001000: read-only */
    sd zero, 16(s2)                                  /* 0x40002000: invalid */
    PTE(t0, page_a, V | R | W | U | A | D); sd t0, 24(s2)   /* 0x40003000: user */
    PTE(t0, page_a, V | X | A); sd t0, 32(s2)       /* 0x40004000: execute-only */
    PTE(t0, page_a, V | W | A | D); sd t0, 40(s2)   /* 0x40005000: W without R: reserved */
    PTE(t0, u_page, V | R | X | U | A); sd t0, 48(s2)   /* 0x40006000: user code */
    /* page contents */
    la t0, page_a; li t1, 0xaaaa; sd t1, 0(t0)
    la t0, page_b; li t1, 0xbbbb; sd t1, 0(t0)
    /* Sv48 root: [0] and [1] -> the Sv39 root used as a level-2 table */
    la t1, root48
    PTE(t0, root, V); sd t0, 0(t1); sd t0, 8(t1)
    /* enter S with Sv39 */
    la t0, root; srli t0, t0, 12; li t1, (8 << 60); or t0, t0, t1; csrw satp, t0
    li t0, (3 << 11); csrc mstatus, t0
    li t0, (1 << 11); csrs mstatus, t0
    la t0, s_code; csrw mepc, t0
    mret

s_code:
    /* 1: a load sets A only */
    li gp, 1
    li a1, 0x40000000
    ld a0, 0(a1); CHECK(a0, 0xaaaa)
    ld a0, 0(s2); andi a0, a0, A | D; CHECK(a0, A)
    /* 2: a store sets D */
    li gp, 2
    li t1, 0xa0a0
    sd t1, 8(a1)
    ld a0, 0(s2); andi a0, a0, A | D; CHECK(a0, A | D)
    /* 3: store to a read-only page */
    li gp, 3
    li a1, 0x40001000
    ld a0, 8(a1); CHECK(a0, 0xa0a0)
    EXPECT_FAULT(15, 0x40001010)
    sd t1, 16(a1)
    FAULTED
    /* 4: invalid PTE */
    li gp, 4
    li a1, 0x40002000
    EXPECT_FAULT(13, 0x40002008)
    ld a0, 8(a1)
    FAULTED
    /* 5: U page from S needs SUM */
    li gp, 5
    li a1, 0x40003000
    EXPECT_FAULT(13, 0x40003000)
    ld a0, 0(a1)
    FAULTED
    li t0, (1 << 18); csrs sstatus, t0
    ld a0, 0(a1); CHECK(a0, 0xaaaa)
    li t0, (1 << 18); csrc sstatus, t0
    /* 6: execute-only page readable with MXR */
    li gp, 6
    li a1, 0x40004000
    EXPECT_FAULT(13, 0x40004000)
    ld a0, 0(a1)
    FAULTED
    li t0, (1 << 19); csrs sstatus, t0
    ld a0, 0(a1); CHECK(a0, 0xaaaa)
    li t0, (1 << 19); csrc sstatus, t0
    /* 7: W without R is reserved */
    li gp, 7
    li a1, 0x40005000
    EXPECT_FAULT(15, 0x40005000)
    sd a0, 0(a1)
    FAULTED
    /* 8: non-canonical address (bit 38 clear, bit 39 set) */
    li gp, 8
    li a1, 0x8000000000
    EXPECT_FAULT(13, 0x8000000000)
    ld a0, 0(a1)
    FAULTED
    /* 9: misaligned gigapage */
    li gp, 9
    li a1, 0xc0000000
    EXPECT_FAULT(13, 0xc0000000)
    ld a0, 0(a1)
    FAULTED
    /* 10: fetch from a non-executable page */
    li gp, 10
    li a1, 0x40000000
    EXPECT_FAULT(12, 0x40000000)
    jalr ra, 0(a1)
    FAULTED
    /* 14: a megapage maps 2 MiB at once; a misaligned one faults */
    li gp, 14
    li a1, 0x40200000
    li t1, 0x80000000
    ld a0, 0(a1); ld t2, 0(t1); bne a0, t2, fail
    li a1, 0x40201ff8
    li t1, 0x80001ff8
    ld a0, 0(a1); ld t2, 0(t1); bne a0, t2, fail
    li a1, 0x40400000
    EXPECT_FAULT(13, 0x40400000)
    ld a0, 0(a1)
    FAULTED
    /* 11: sfence.vma makes a changed PTE visible */
    li gp, 11
    PTE(t0, page_b, V | R | W | A | D); sd t0, 0(s2)
    sfence.vma
    li a1, 0x40000000
    ld a0, 0(a1); CHECK(a0, 0xbbbb)
    /* 12: a misaligned load across two pages with different frames */
    li gp, 12
    li a1, 0x40001000          /* maps page_a, 0x40000000 now maps page_b */
    li t0, 0x1122334455667788
    la t1, page_b + 0xffc; sw t0, 0(t1)
    la t1, page_a; srli t0, t0, 32; sw t0, 0(t1)
    li a1, 0x40000ffc
    ld a0, 0(a1); CHECK(a0, 0x1122334455667788)
    /* 13: a misaligned store whose second page faults writes nothing */
    li gp, 13
    li a1, 0x40000ffc
    EXPECT_FAULT(15, 0x40001000)
    sd zero, 0(a1)
    FAULTED
    lwu a0, 0(a1); CHECK(a0, 0x55667788)
    /* to M, then Sv48 */
    li gp, 20
    li s4, 9
    ecall
s_code48:
    li gp, 21
    li a1, 0x8040000000        /* level-3 index 1 */
    ld a0, 0(a1); CHECK(a0, 0xbbbb)
    li a1, 0x40000000
    ld a0, 0(a1); CHECK(a0, 0xbbbb)
    li gp, 22
    li a1, 0x800000000000      /* non-canonical for Sv48 */
    EXPECT_FAULT(13, 0x800000000000)
    ld a0, 0(a1)
    FAULTED
    li gp, 23
    li s4, 9
    ecall
m_final:
    /* MPRV: M-mode loads translated with MPP = S */
    li gp, 30
    la t0, root; srli t0, t0, 12; li t1, (8 << 60); or t0, t0, t1; csrw satp, t0
    li t0, (3 << 11); csrc mstatus, t0
    li t0, (1 << 11) | (1 << 17); csrs mstatus, t0
    li a1, 0x40000000
    ld a0, 0(a1); CHECK(a0, 0xbbbb)
    li t0, (1 << 17); csrc mstatus, t0
    /* U-mode on Sv39: user pages only; the U and S TLB sets stay apart */
    li gp, 40
    li t0, (3 << 11); csrc mstatus, t0       /* MPP = U */
    li t0, 0x40006000; csrw mepc, t0
    mret

    .align 2
m_handler:
    csrr t3, mcause
    li t4, 8
    beq t3, t4, m_uecall
    li t4, 9
    beq t3, t4, m_ecall
    bne t3, s4, fail
    csrr t3, mtval
    bne t3, s5, fail
    addi s6, s6, 1
    li t4, 12
    beq s4, t4, 1f
    csrr t3, mepc; addi t3, t3, 4; csrw mepc, t3
    mret
1:  csrw mepc, ra
    mret
m_uecall:
    li t4, 42
    bne gp, t4, fail
    csrw satp, zero
    j pass

m_ecall:
    li t4, 21
    bge gp, t4, 2f
    la t0, root48; srli t0, t0, 12; li t1, (9 << 60); or t0, t0, t1; csrw satp, t0
    la t0, s_code48; csrw mepc, t0
    mret
2:  la t0, m_final; csrw mepc, t0
    li t0, (3 << 11); csrs mstatus, t0
    mret
PASS_FAIL

    /* user code, run at 0x40006000: position-independent, stays on its page */
    .align 12
u_page:
    li a1, 0x40003000
    ld a0, 0(a1)                     /* a user data page */
    li t6, 0x11223344
    bne a0, t6, u_bad
    li gp, 41
    li a1, 0x40000000
    EXPECT_FAULT(13, 0x40000000)     /* a supervisor page */
    ld a0, 0(a1)
    bne s6, s7, u_bad
    li gp, 42
    ecall
u_bad:
    ebreak                           /* cause 3: not expected, the handler fails */
    .align 12

    .data
    .align 12
root: .space 4096
l1: .space 4096
l0: .space 4096
root48: .space 4096
page_a: .space 4096
page_b: .space 4096
