#include "test.h"
/* F and D: rounding modes, fflags, NaN-boxing, canonical NaN, fmin/fmax, compares,
 * conversions with saturation, fused multiply-add, classify. */
#define LS(reg, bits) li t0, bits; fmv.w.x reg, t0
#define LD(reg, bits) li t0, bits; fmv.d.x reg, t0
#define CHECK_S(reg, bits) fmv.x.d a0, reg; li t6, 0xffffffff00000000 | (bits); bne a0, t6, fail
#define CHECK_D(reg, bits) fmv.x.d a0, reg; li t6, bits; bne a0, t6, fail
#define FLAGS(v) fsflags a0, zero; CHECK(a0, v)
#define NV 16
#define DZ 8
#define OF 4
#define UF 2
#define NX 1
START
    fsflags zero
    /* 1-6: 1 + 2^-24 (a tie) in every rounding mode */
    LS(f1, 0x3f800000)
    LS(f2, 0x33800000)
    li gp, 1
    fadd.s f3, f1, f2, rne; CHECK_S(f3, 0x3f800000); FLAGS(NX)
    li gp, 2
    fadd.s f3, f1, f2, rtz; CHECK_S(f3, 0x3f800000); FLAGS(NX)
    li gp, 3
    fadd.s f3, f1, f2, rdn; CHECK_S(f3, 0x3f800000); FLAGS(NX)
    li gp, 4
    fadd.s f3, f1, f2, rup; CHECK_S(f3, 0x3f800001); FLAGS(NX)
    li gp, 5
    fadd.s f3, f1, f2, rmm; CHECK_S(f3, 0x3f800001); FLAGS(NX)
    li gp, 6
    fneg.s f4, f1
    fsub.s f3, f4, f2, rmm; CHECK_S(f3, 0xbf800001)
    fsub.s f3, f4, f2, rdn; CHECK_S(f3, 0xbf800001)
    fsub.s f3, f4, f2, rup; CHECK_S(f3, 0xbf800000); FLAGS(NX)
    /* 7: dynamic rounding mode from frm */
    li gp, 7
    fsrmi 3
    fadd.s f3, f1, f2; CHECK_S(f3, 0x3f800001)
    fsrmi 0
    fadd.s f3, f1, f2; CHECK_S(f3, 0x3f800000); FLAGS(NX)
    /* 8: RMM multiplication tie: (1 + 2^-12)^2 */
    li gp, 8
    LS(f5, 0x3f800800)
    fmul.s f3, f5, f5, rne; CHECK_S(f3, 0x3f801000)
    fmul.s f3, f5, f5, rmm; CHECK_S(f3, 0x3f801001); FLAGS(NX)
    /* 9: double ties: 1 + 2^-53 */
    li gp, 9
    LD(f1, 0x3ff0000000000000)
    LD(f2, 0x3ca0000000000000)
    fadd.d f3, f1, f2, rne; CHECK_D(f3, 0x3ff0000000000000)
    fadd.d f3, f1, f2, rmm; CHECK_D(f3, 0x3ff0000000000001)
    fadd.d f3, f1, f2, rup; CHECK_D(f3, 0x3ff0000000000001); FLAGS(NX)
    /* 10: divide by zero, invalid, overflow, underflow */
    li gp, 10
    LD(f0, 0)
    fdiv.d f3, f1, f0; CHECK_D(f3, 0x7ff0000000000000); FLAGS(DZ)
    li gp, 11
    fdiv.d f3, f0, f0; CHECK_D(f3, 0x7ff8000000000000); FLAGS(NV)
    li gp, 12
    fneg.d f4, f1
    fsqrt.d f3, f4; CHECK_D(f3, 0x7ff8000000000000); FLAGS(NV)
    li gp, 13
    LS(f5, 0x7f7fffff)
    LS(f6, 0x40000000)
    fmul.s f3, f5, f6; CHECK_S(f3, 0x7f800000); FLAGS(OF | NX)
    fmul.s f3, f5, f6, rtz; CHECK_S(f3, 0x7f7fffff); FLAGS(OF | NX)
    li gp, 14
    LS(f5, 0x00800001)       /* smallest normal + 1 ulp, halved: tiny and inexact */
    LS(f6, 0x3f000000)
    fmul.s f3, f5, f6; CHECK_S(f3, 0x00400000); FLAGS(UF | NX)
    LS(f5, 0x00800000)       /* exact subnormal result: no underflow flag */
    fmul.s f3, f5, f6; CHECK_S(f3, 0x00400000); FLAGS(0)
    li gp, 15
    fsqrt.s f3, f6; CHECK_S(f3, 0x3f3504f3); FLAGS(NX)
    /* 20: NaN boxing: an unboxed single reads as the canonical NaN */
    li gp, 20
    LD(f5, 0x000000003f800000)
    LS(f6, 0x3f800000)
    fadd.s f3, f5, f6; CHECK_S(f3, 0x7fc00000); FLAGS(0)
    li gp, 21
    fmv.x.w a0, f5; CHECK(a0, 0x3f800000)              /* fmv.x.w takes raw bits */
    LS(f5, 0x80000000)
    fmv.x.w a0, f5; CHECK(a0, 0xffffffff80000000)      /* sign-extended */
    li gp, 22
    fsgnj.s f3, f5, f5; CHECK_S(f3, 0x80000000)        /* result boxed */
    /* 23: arithmetic NaN results are canonical; signalling inputs raise NV */
    li gp, 23
    LD(f5, 0x7ff4000000000001)                         /* sNaN with payload */
    fadd.d f3, f5, f1; CHECK_D(f3, 0x7ff8000000000000); FLAGS(NV)
    LD(f5, 0xfff8000000000005)                         /* qNaN with payload */
    fmul.d f3, f5, f1; CHECK_D(f3, 0x7ff8000000000000); FLAGS(0)
    /* 30: fmin / fmax */
    li gp, 30
    LS(f5, 0x80000000)
    LS(f6, 0x00000000)
    fmin.s f3, f5, f6; CHECK_S(f3, 0x80000000)
    fmin.s f3, f6, f5; CHECK_S(f3, 0x80000000)
    fmax.s f3, f5, f6; CHECK_S(f3, 0x00000000)
    fmax.s f3, f6, f5; CHECK_S(f3, 0x00000000); FLAGS(0)
    li gp, 31
    LS(f5, 0x7fc00000)
    LS(f6, 0x3f800000)
    fmin.s f3, f5, f6; CHECK_S(f3, 0x3f800000); FLAGS(0)
    LS(f5, 0x7f800001)                                 /* sNaN */
    fmax.s f3, f6, f5; CHECK_S(f3, 0x3f800000); FLAGS(NV)
    fmax.s f3, f5, f5; CHECK_S(f3, 0x7fc00000); FLAGS(NV)
    li gp, 32
    LD(f5, 0x7ff8000000000000)
    fmin.d f3, f5, f5; CHECK_D(f3, 0x7ff8000000000000); FLAGS(0)
    /* 33: compares */
    li gp, 33
    LD(f5, 0x7ff8000000000000)
    feq.d a0, f5, f1; CHECK(a0, 0); FLAGS(0)
    flt.d a0, f5, f1; CHECK(a0, 0); FLAGS(NV)
    fle.d a0, f1, f5; CHECK(a0, 0); FLAGS(NV)
    LD(f5, 0x7ff0000000000001)
    feq.d a0, f5, f1; CHECK(a0, 0); FLAGS(NV)
    LD(f5, 0x8000000000000000)
    feq.d a0, f5, f0; CHECK(a0, 1)                     /* -0 == +0 */
    flt.d a0, f5, f0; CHECK(a0, 0)
    fle.d a0, f5, f0; CHECK(a0, 1)
    flt.d a0, f0, f1; CHECK(a0, 1); FLAGS(0)
    /* 40: float -> integer, saturating */
    li gp, 40
    LS(f5, 0x7fc00000)
    fcvt.w.s a0, f5, rtz; CHECK(a0, 0x7fffffff); FLAGS(NV)
    fcvt.wu.s a0, f5, rtz; CHECK(a0, 0xffffffffffffffff); FLAGS(NV)
    fcvt.l.s a0, f5, rtz; CHECK(a0, 0x7fffffffffffffff); FLAGS(NV)
    li gp, 41
    LS(f5, 0xff800000)                                 /* -inf */
    fcvt.w.s a0, f5, rtz; CHECK(a0, 0xffffffff80000000); FLAGS(NV)
    fcvt.lu.s a0, f5, rtz; CHECK(a0, 0); FLAGS(NV)
    li gp, 42
    LS(f5, 0x4f32d05e)                                 /* 3e9 */
    fcvt.w.s a0, f5, rtz; CHECK(a0, 0x7fffffff); FLAGS(NV)
    fcvt.wu.s a0, f5, rtz; CHECK(a0, 0xffffffffb2d05e00); FLAGS(0)
    li gp, 43
    LS(f5, 0xbf000000)                                 /* -0.5 */
    fcvt.wu.s a0, f5, rtz; CHECK(a0, 0); FLAGS(NX)
    fcvt.wu.s a0, f5, rdn; CHECK(a0, 0); FLAGS(NV)
    li gp, 44
    LD(f5, 0x43e0000000000000)                         /* 2^63 */
    fcvt.l.d a0, f5, rtz; CHECK(a0, 0x7fffffffffffffff); FLAGS(NV)
    fcvt.lu.d a0, f5, rtz; CHECK(a0, 0x8000000000000000); FLAGS(0)
    li gp, 45
    LD(f5, 0x4004000000000000)                         /* 2.5 */
    fcvt.w.d a0, f5, rne; CHECK(a0, 2)
    fcvt.w.d a0, f5, rmm; CHECK(a0, 3)
    fcvt.w.d a0, f5, rup; CHECK(a0, 3)
    fcvt.w.d a0, f5, rdn; CHECK(a0, 2)
    fcvt.w.d a0, f5, rtz; CHECK(a0, 2); FLAGS(NX)
    fneg.d f5, f5
    fcvt.w.d a0, f5, rmm; CHECK(a0, -3)
    fcvt.w.d a0, f5, rdn; CHECK(a0, -3)
    fcvt.l.d a0, f5, rup; CHECK(a0, -2); FLAGS(NX)
    li gp, 46
    LD(f5, 0x41efffffffe00000)                         /* 4294967295.0 */
    fcvt.wu.d a0, f5, rtz; CHECK(a0, 0xffffffffffffffff); FLAGS(0)
    LD(f5, 0x8000000000000000)
    fcvt.lu.d a0, f5, rtz; CHECK(a0, 0); FLAGS(0)
    /* 50: integer -> float */
    li gp, 50
    li a1, 16777217
    fcvt.s.w f3, a1, rne; CHECK_S(f3, 0x4b800000)
    fcvt.s.w f3, a1, rup; CHECK_S(f3, 0x4b800001)
    fcvt.s.l f3, a1, rmm; CHECK_S(f3, 0x4b800001); FLAGS(NX)
    li gp, 51
    li a1, 0x20000000000001                            /* 2^53 + 1 */
    fcvt.d.l f3, a1, rne; CHECK_D(f3, 0x4340000000000000)
    fcvt.d.l f3, a1, rmm; CHECK_D(f3, 0x4340000000000001); FLAGS(NX)
    li gp, 52
    li a1, -1
    fcvt.d.lu f3, a1, rtz; CHECK_D(f3, 0x43efffffffffffff)
    fcvt.d.lu f3, a1, rne; CHECK_D(f3, 0x43f0000000000000); FLAGS(NX)
    fcvt.d.wu f3, a1; CHECK_D(f3, 0x41efffffffe00000)
    fcvt.d.w f3, a1; CHECK_D(f3, 0xbff0000000000000); FLAGS(0)
    /* 53: between formats */
    li gp, 53
    LD(f5, 0x7ff4000000000000)
    fcvt.s.d f3, f5; CHECK_S(f3, 0x7fc00000); FLAGS(NV)
    LS(f5, 0x7f800001)
    fcvt.d.s f3, f5; CHECK_D(f3, 0x7ff8000000000000); FLAGS(NV)
    LD(f5, 0x3ff0000010000000)                         /* 1 + 2^-24: a tie for binary32 */
    fcvt.s.d f3, f5, rne; CHECK_S(f3, 0x3f800000)
    fcvt.s.d f3, f5, rmm; CHECK_S(f3, 0x3f800001); FLAGS(NX)
    /* 60: fused multiply-add rounds once */
    li gp, 60
    LD(f5, 0x3ff0000000000001)                         /* 1 + 2^-52 */
    LD(f6, 0x3feffffffffffffe)                         /* 1 - 2^-52 */
    fmsub.d f3, f5, f6, f1; CHECK_D(f3, 0xb970000000000000)
    fmul.d f4, f5, f6
    fsub.d f4, f4, f1; CHECK_D(f4, 0); FLAGS(NX)
    li gp, 61
    LD(f5, 0x4000000000000000)
    LD(f6, 0x4008000000000000)
    fmadd.d f3, f5, f6, f1; CHECK_D(f3, 0x401c000000000000)   /* 7 */
    fmsub.d f3, f5, f6, f1; CHECK_D(f3, 0x4014000000000000)   /* 5 */
    fnmsub.d f3, f5, f6, f1; CHECK_D(f3, 0xc014000000000000)  /* -5 */
    fnmadd.d f3, f5, f6, f1; CHECK_D(f3, 0xc01c000000000000)  /* -7 */
    li gp, 62
    LD(f7, 0x7ff8000000000000)
    fmadd.d f3, f0, f7, f1; CHECK_D(f3, 0x7ff8000000000000); FLAGS(0)
    LD(f8, 0x7ff0000000000000)
    fmadd.d f3, f0, f8, f7; CHECK_D(f3, 0x7ff8000000000000); FLAGS(NV)   /* 0*inf + qNaN */
    li gp, 63
    LS(f5, 0x3f800000)
    fnmsub.s f3, f5, f5, f5; CHECK_S(f3, 0x00000000)
    fnmsub.s f3, f5, f5, f5, rdn; CHECK_S(f3, 0x80000000); FLAGS(0)
    /* 64: fused multiply-add with ties to max magnitude (a tie only the exact sum shows) */
    li gp, 64
    LS(f5, 0x3f800000)
    LS(f6, 0x33800000)                                 /* 2^-24 */
    fmadd.s f3, f5, f5, f6, rne; CHECK_S(f3, 0x3f800000)
    fmadd.s f3, f5, f5, f6, rmm; CHECK_S(f3, 0x3f800001)
    fnmadd.s f3, f5, f5, f6, rmm; CHECK_S(f3, 0xbf800001); FLAGS(NX)
    LS(f6, 0x33800001)                                 /* just above the tie */
    fmsub.s f3, f5, f5, f6, rmm; CHECK_S(f3, 0x3f7fffff); FLAGS(NX)
    li gp, 65
    LD(f5, 0x3ff0000000000000)
    LD(f6, 0x3ca0000000000000)                         /* 2^-53 */
    fmadd.d f3, f5, f5, f6, rne; CHECK_D(f3, 0x3ff0000000000000)
    fmadd.d f3, f5, f5, f6, rmm; CHECK_D(f3, 0x3ff0000000000001)
    fnmsub.d f3, f5, f5, f6, rmm; CHECK_D(f3, 0xbfefffffffffffff); FLAGS(NX)
    /* 70: sign injection and classify */
    li gp, 70
    LD(f5, 0x3ff0000000000000)
    LD(f6, 0x8000000000000000)
    fsgnj.d f3, f5, f6; CHECK_D(f3, 0xbff0000000000000)
    fsgnjn.d f3, f5, f6; CHECK_D(f3, 0x3ff0000000000000)
    fsgnjx.d f3, f3, f6; CHECK_D(f3, 0xbff0000000000000)
    li gp, 71
    LD(f5, 0xfff0000000000000); fclass.d a0, f5; CHECK(a0, 1)
    LD(f5, 0x0000000000000000); fclass.d a0, f5; CHECK(a0, 16)
    LD(f5, 0x7ff0000000000001); fclass.d a0, f5; CHECK(a0, 256)
    LD(f5, 0x7ff8000000000000); fclass.d a0, f5; CHECK(a0, 512)
    LS(f5, 0x00000001); fclass.s a0, f5; CHECK(a0, 32)
    LS(f5, 0x80000001); fclass.s a0, f5; CHECK(a0, 4)
    LD(f5, 0x3ff0000000000000); fclass.s a0, f5; CHECK(a0, 512)   /* unboxed */
    /* 80: loads and stores; flw boxes */
    li gp, 80
    la s0, fdata
    li t0, 0x40490fdb; sw t0, 0(s0)
    flw f3, 0(s0); CHECK_S(f3, 0x40490fdb)
    fsd f3, 8(s0); ld a0, 8(s0); CHECK(a0, 0xffffffff40490fdb)
    fsw f1, 16(s0); lwu a0, 16(s0); CHECK(a0, 0)
    fld f4, 8(s0); CHECK_D(f4, 0xffffffff40490fdb)
    fmv.d f8, f1; c.fsd f8, 24(s0); c.fld f9, 24(s0); CHECK_D(f9, 0x3ff0000000000000)
    /* 81: fcsr layout */
    li gp, 81
    li t0, 0xff; fscsr t0
    frrm a0; CHECK(a0, 7)
    frflags a0; CHECK(a0, 31)
    frcsr a0; CHECK(a0, 0xff)
    fscsr zero
    /* 90: reserved rounding modes are illegal */
    li gp, 90
    la t0, t90; csrw mtvec, t0
    .word 0x00005053          /* fadd.s f0, f0, f0 with rm = 5 */
    j fail
    .align 2
t90:
    csrr a0, mcause; CHECK(a0, 2)
    csrr a0, mtval; CHECK(a0, 0x00005053)
    li gp, 91
    la t0, t91; csrw mtvec, t0
    fsrmi 5
    fadd.s f0, f0, f0         /* dynamic with frm = 5 */
    j fail
    .align 2
t91:
    csrr a0, mcause; CHECK(a0, 2)
    fsrmi 0
    j pass
PASS_FAIL
    .data
    .align 4
fdata: .space 64
