# F and D extensions (included by riscv.pyx).
#
# Arithmetic runs on the host FPU with its rounding mode set per operation and
# the exception flags read back (MXCSR on x86-64, <fenv.h> elsewhere), so the
# results and fflags are those of IEEE 754 hardware.  RISC-V specifics on top:
# canonical NaN results, NaN-boxing of binary32 values, fmin/fmax (-0 < +0,
# sNaN raises NV, one NaN returns the other operand), signalling/quiet
# compares, fcvt saturation.  RMM (round to nearest, ties to max magnitude),
# which hosts lack, is exact for add/sub/mul (error-free transforms find the
# ties), div and sqrt (their exact results are never ties), conversions and
# fused multiply-add (rounded to odd in a wider format first: binary64 for
# binary32, x87 extended for binary64; without the latter, binary64 FMA in
# RMM rounds ties to even).

cdef extern from *:
    """
    #include <math.h>
    #include <fenv.h>
    #include <float.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__) && defined(__SSE2__)
    #include <xmmintrin.h>
    static inline void rvf_begin(int rm) {
        static const unsigned mode[4] = {0x0000, 0x6000, 0x2000, 0x4000}; /* RNE RTZ RDN RUP */
        unsigned csr = _mm_getcsr() & ~(0x6000u | 0x3Fu);
        _mm_setcsr(csr | mode[rm & 3]);
    }
    static inline unsigned rvf_end(void) {
        unsigned csr = _mm_getcsr(), f = 0;
        if (csr & 0x20) f |= 1;   /* PE -> NX */
        if (csr & 0x10) f |= 2;   /* UE -> UF */
        if (csr & 0x08) f |= 4;   /* OE -> OF */
        if (csr & 0x04) f |= 8;   /* ZE -> DZ */
        if (csr & 0x01) f |= 16;  /* IE -> NV */
        _mm_setcsr(csr & ~(0x6000u | 0x3Fu));
        return f;
    }
    #else
    static inline void rvf_begin(int rm) {
        static const int mode[4] = {FE_TONEAREST, FE_TOWARDZERO, FE_DOWNWARD, FE_UPWARD};
        fesetround(mode[rm & 3]);
        feclearexcept(FE_ALL_EXCEPT);
    }
    static inline unsigned rvf_end(void) {
        int e = fetestexcept(FE_ALL_EXCEPT);
        unsigned f = 0;
        if (e & FE_INEXACT) f |= 1;
        if (e & FE_UNDERFLOW) f |= 2;
        if (e & FE_OVERFLOW) f |= 4;
        if (e & FE_DIVBYZERO) f |= 8;
        if (e & FE_INVALID) f |= 16;
        fesetround(FE_TONEAREST);
        feclearexcept(FE_ALL_EXCEPT);
        return f;
    }
    #endif
    static inline double rvf_d(uint64_t v) { double d; memcpy(&d, &v, 8); return d; }
    static inline uint64_t rvf_bd(double d) { uint64_t v; memcpy(&v, &d, 8); return v; }
    static inline float rvf_s(uint32_t v) { float d; memcpy(&d, &v, 4); return d; }
    static inline uint32_t rvf_bs(float d) { uint32_t v; memcpy(&v, &d, 4); return v; }

    /* ties-to-max-magnitude fix: r = RNE result, err = exact - r (exact, same format) */
    static inline double rvf_rmm_d(double r, double err) {
        if (err == 0 || isnan(r) || isinf(r) || (r > 0) != (err > 0) || r == 0) return r;
        double up = nextafter(fabs(r), INFINITY) - fabs(r);
        if (fabs(err) * 2 == up) return nextafter(r, r > 0 ? INFINITY : -INFINITY);
        return r;
    }
    static inline float rvf_rmm_s(float r, float err) {
        if (err == 0 || isnan(r) || isinf(r) || (r > 0) != (err > 0) || r == 0) return r;
        float up = nextafterf(fabsf(r), INFINITY) - fabsf(r);
        if (fabsf(err) * 2 == up) return nextafterf(r, r > 0 ? INFINITY : -INFINITY);
        return r;
    }

    /* Fused multiply-add rounded to nearest, ties to max magnitude: the exact
       a*b+c rounded to odd in a wider format (binary64 for binary32, x87 extended
       for binary64), then rounded with RMM; rounding to odd at p+2 or more bits
       keeps every tie of the final rounding visible. */
    static uint32_t rvf_d_to_s(double a, int rm, unsigned *fl);
    static inline int rvf_issnan_s(float x) {
        uint32_t u = rvf_bs(x);
        return (u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) && !(u & 0x400000u);
    }
    static uint32_t rvf_fma_rmm_s(double a, double b, double c, unsigned *fl) {
        volatile double va = a, vb = b, vc = c, r;
        unsigned f1, f2;
        uint64_t bits;
        uint32_t out;
        rvf_begin(1);                           /* toward zero */
        r = va * vb + vc;                       /* the product is exact in binary64 */
        f1 = rvf_end();
        bits = rvf_bd(r);
        if ((f1 & 1) && !isnan(r) && !isinf(r)) bits |= 1;   /* round to odd */
        out = rvf_d_to_s(rvf_d(bits), 4, &f2);
        *fl = f2 | (f1 & 17);
        return out;
    }
    #if defined(__x86_64__) && LDBL_MANT_DIG == 64
    #define RVF_HAVE_FMA_RMM_D 1
    static uint64_t rvf_fma_rmm_d(double a, double b, double c, unsigned *fl) {
        volatile long double la = a, lb = b, lc = c, r;
        long double x;
        double d;
        unsigned f1, f2;
        uint64_t mant;
        fesetround(FE_TOWARDZERO);
        feclearexcept(FE_ALL_EXCEPT);
        r = fmal(la, lb, lc);
        f1 = fetestexcept(FE_INEXACT | FE_INVALID);
        fesetround(FE_TONEAREST);
        feclearexcept(FE_ALL_EXCEPT);
        x = r;
        if ((f1 & FE_INEXACT) && !isnan(x) && !isinf(x)) {
            memcpy(&mant, (const void *)&x, 8);  /* x87 extended: the 64-bit significand first */
            mant |= 1;
            memcpy((void *)&x, &mant, 8);
        }
        {   /* x87 does this conversion: read its flags through <fenv.h> */
            volatile long double vx = x;
            volatile double vd;
            int e;
            feclearexcept(FE_ALL_EXCEPT);
            vd = (double)vx;
            d = vd;
            e = fetestexcept(FE_ALL_EXCEPT);
            feclearexcept(FE_ALL_EXCEPT);
            f2 = ((e & FE_INEXACT) ? 1 : 0) | ((e & FE_UNDERFLOW) ? 2 : 0)
               | ((e & FE_OVERFLOW) ? 4 : 0);
        }
        if (!isnan(d) && !isinf(d) && d != 0) {
            long double err = x - (long double)d;
            if (err != 0 && (d > 0) == (err > 0)) {
                long double up = (long double)nextafter(fabs(d), INFINITY) - (long double)fabs(d);
                if (fabsl(err) * 2 == up) d = nextafter(d, d > 0 ? INFINITY : -INFINITY);
            }
        }
        *fl = f2 | ((f1 & FE_INEXACT) ? 1 : 0) | ((f1 & FE_INVALID) ? 16 : 0);
        if (isnan(d)) return 0x7ff8000000000000ULL;
        return rvf_bd(d);
    }
    #endif

    /* op: 0 add 1 sub 2 mul 3 div 4 sqrt 5 fmadd 6 fmsub 7 fnmsub 8 fnmadd */
    static uint64_t rvf_arith_d(int op, double a, double b, double c, int rm, unsigned *fl) {
        volatile double va = a, vb = b, vc = c;
        volatile double r, e = 0;
        int rmm = rm == 4;
    #ifdef RVF_HAVE_FMA_RMM_D
        if (rmm && op >= 5) {
            double x = (op >= 7) ? -a : a, z = (op == 6 || op == 8) ? -c : c;
            uint64_t out = rvf_fma_rmm_d(x, b, z, fl);
            if ((isinf(a) && b == 0) || (a == 0 && isinf(b))) *fl |= 16;
            return out;
        }
    #endif
        rvf_begin(rmm ? 0 : rm);
        switch (op) {
        case 0: r = va + vb; break;
        case 1: r = va - vb; break;
        case 2: r = va * vb; break;
        case 3: r = va / vb; break;
        case 4: r = sqrt(va); break;
        case 5: r = fma(va, vb, vc); break;
        case 6: r = fma(va, vb, -vc); break;
        case 7: r = fma(-va, vb, vc); break;
        default: r = fma(-va, vb, -vc); break;
        }
        *fl = rvf_end();
        if (op >= 5 && ((isinf(va) && vb == 0) || (va == 0 && isinf(vb)))) *fl |= 16;
        if (rmm && op <= 2 && !(*fl & 16)) {
            double s = r, x = va, y = (op == 1) ? -vb : vb;
            if (op == 2) e = fma(x, y, -s);
            else { double bb = s - x; e = (x - (s - bb)) + (y - bb); }
            r = rvf_rmm_d(s, e);
        }
        if (isnan(r)) return 0x7ff8000000000000ULL;
        return rvf_bd(r);
    }
    static uint32_t rvf_arith_s(int op, float a, float b, float c, int rm, unsigned *fl) {
        volatile float va = a, vb = b, vc = c;
        volatile float r, e = 0;
        int rmm = rm == 4;
        if (rmm && op >= 5) {
            double x = (op >= 7) ? -(double)a : (double)a, z = (op == 6 || op == 8) ? -(double)c : (double)c;
            uint32_t out = rvf_fma_rmm_s(x, (double)b, z, fl);
            if ((isinf(a) && b == 0) || (a == 0 && isinf(b))) *fl |= 16;
            if (rvf_issnan_s(a) || rvf_issnan_s(b) || rvf_issnan_s(c)) *fl |= 16;
            return out;
        }
        rvf_begin(rmm ? 0 : rm);
        switch (op) {
        case 0: r = va + vb; break;
        case 1: r = va - vb; break;
        case 2: r = va * vb; break;
        case 3: r = va / vb; break;
        case 4: r = sqrtf(va); break;
        case 5: r = fmaf(va, vb, vc); break;
        case 6: r = fmaf(va, vb, -vc); break;
        case 7: r = fmaf(-va, vb, vc); break;
        default: r = fmaf(-va, vb, -vc); break;
        }
        *fl = rvf_end();
        if (op >= 5 && ((isinf(va) && vb == 0) || (va == 0 && isinf(vb)))) *fl |= 16;
        if (rmm && op <= 2 && !(*fl & 16)) {
            float s = r, x = va, y = (op == 1) ? -vb : vb;
            if (op == 2) e = fmaf(x, y, -s);
            else { float bb = s - x; e = (x - (s - bb)) + (y - bb); }
            r = rvf_rmm_s(s, e);
        }
        if (isnan(r)) return 0x7fc00000u;
        return rvf_bs(r);
    }

    /* float -> integer with RISC-V saturation. kind: 0 W, 1 WU, 2 L, 3 LU */
    static uint64_t rvf_to_int(double a, int kind, int rm, unsigned *fl) {
        double r, lo, hi;
        *fl = 0;
        if (isnan(a)) {
            *fl = 16;
            return kind == 0 ? 0x7fffffffULL : kind == 1 ? 0xFFFFFFFFFFFFFFFFULL
                 : kind == 2 ? 0x7fffffffffffffffULL : 0xFFFFFFFFFFFFFFFFULL;
        }
        if (rm == 4) r = round(a);
        else { rvf_begin(rm); volatile double v = a; r = nearbyint(v); rvf_end(); }
        switch (kind) {
        case 0: lo = -2147483648.0; hi = 2147483647.0; break;
        case 1: lo = 0.0; hi = 4294967295.0; break;
        case 2: lo = -9223372036854775808.0; hi = 9223372036854775808.0; break;
        default: lo = 0.0; hi = 18446744073709551616.0; break;
        }
        if (r < lo) { *fl = 16;
            return kind == 0 ? 0xFFFFFFFF80000000ULL : kind == 2 ? 0x8000000000000000ULL : 0; }
        if ((kind <= 1 && r > hi) || (kind >= 2 && r >= hi)) { *fl = 16;
            return kind == 0 ? 0x7fffffffULL : kind == 1 ? 0xFFFFFFFFFFFFFFFFULL
                 : kind == 2 ? 0x7fffffffffffffffULL : 0xFFFFFFFFFFFFFFFFULL; }
        if (r != a) *fl = 1;
        switch (kind) {
        case 0: return (uint64_t)(int64_t)(int32_t)(int64_t)r;
        case 1: return (uint64_t)(int64_t)(int32_t)(uint32_t)(uint64_t)r;
        case 2: return (uint64_t)(int64_t)r;
        default: return (uint64_t)r;
        }
    }

    /* integer -> float; kind as above, dbl: 1 for binary64 */
    static uint64_t rvf_from_int(uint64_t x, int kind, int dbl, int rm, unsigned *fl) {
        int rmm = rm == 4, neg;
        __int128 ex;
        switch (kind) {
        case 0: ex = (int32_t)x; break;
        case 1: ex = (uint32_t)x; break;
        case 2: ex = (int64_t)x; break;
        default: ex = (unsigned __int128)x; break;
        }
        neg = ex < 0;
        rvf_begin(rmm ? 0 : rm);
        if (dbl) {
            volatile double r;
            if (kind == 3) r = (double)(uint64_t)x; else if (kind == 1) r = (double)(uint32_t)x;
            else r = (double)(int64_t)(kind == 0 ? (int64_t)(int32_t)x : (int64_t)x);
            *fl = rvf_end();
            double d = r;
            if (rmm && (*fl & 1)) {
                __int128 diff = ex - (__int128)d;   /* exact: |d| <= 2^64 */
                double up = nextafter(fabs(d), INFINITY) - fabs(d);
                if (((diff > 0) == !neg) && diff != 0 && (__int128)up == 2 * (diff < 0 ? -diff : diff))
                    d = nextafter(d, neg ? -INFINITY : INFINITY);
            }
            return rvf_bd(d);
        } else {
            volatile float r;
            if (kind == 3) r = (float)(uint64_t)x; else if (kind == 1) r = (float)(uint32_t)x;
            else r = (float)(int64_t)(kind == 0 ? (int64_t)(int32_t)x : (int64_t)x);
            *fl = rvf_end();
            float d = r;
            if (rmm && (*fl & 1)) {
                __int128 diff = ex - (__int128)d;
                float up = nextafterf(fabsf(d), INFINITY) - fabsf(d);
                if (((diff > 0) == !neg) && diff != 0 && (__int128)up == 2 * (diff < 0 ? -diff : diff))
                    d = nextafterf(d, neg ? -INFINITY : INFINITY);
            }
            return 0xFFFFFFFF00000000ULL | rvf_bs(d);
        }
    }

    static uint32_t rvf_d_to_s(double a, int rm, unsigned *fl) {
        volatile double va = a;
        volatile float r;
        rvf_begin(rm == 4 ? 0 : rm);
        r = (float)va;
        *fl = rvf_end();
        if (isnan(r)) return 0x7fc00000u;
        if (rm == 4 && (*fl & 1)) {
            double err = va - (double)r;
            float f = r;
            if (!isinf(f) && err != 0 && (f > 0) == (err > 0) && f != 0) {
                double up = (double)nextafterf(fabsf(f), INFINITY) - (double)fabsf(f);
                if (fabs(err) * 2 == up) f = nextafterf(f, f > 0 ? INFINITY : -INFINITY);
            }
            return rvf_bs(f);
        }
        return rvf_bs(r);
    }
    static uint64_t rvf_s_to_d(float a, unsigned *fl) {
        volatile float va = a;
        volatile double r;
        rvf_begin(0);
        r = (double)va;
        *fl = rvf_end();
        if (isnan(r)) return 0x7ff8000000000000ULL;
        return rvf_bd(r);
    }
    """
    uint64_t rvf_arith_d(int op, double a, double b, double c, int rm, unsigned *fl) noexcept nogil
    uint32_t rvf_arith_s(int op, float a, float b, float c, int rm, unsigned *fl) noexcept nogil
    uint64_t rvf_to_int(double a, int kind, int rm, unsigned *fl) noexcept nogil
    uint64_t rvf_from_int(uint64_t x, int kind, int dbl, int rm, unsigned *fl) noexcept nogil
    uint32_t rvf_d_to_s(double a, int rm, unsigned *fl) noexcept nogil
    uint64_t rvf_s_to_d(float a, unsigned *fl) noexcept nogil
    double rvf_d(uint64_t v) noexcept nogil
    float rvf_s(uint32_t v) noexcept nogil


cdef inline uint32_t unbox(uint64_t v) noexcept nogil:
    if (v >> 32) != 0xffffffffU:
        return 0x7fc00000U
    return <uint32_t>v

cdef inline uint64_t box(uint32_t v) noexcept nogil:
    return 0xFFFFFFFF00000000ULL | v

cdef inline int isnan_s(uint32_t v) noexcept nogil:
    return (v & 0x7f800000U) == 0x7f800000U and (v & 0x7fffff) != 0

cdef inline int issnan_s(uint32_t v) noexcept nogil:
    return isnan_s(v) and not (v & 0x400000)

cdef inline int isnan_d(uint64_t v) noexcept nogil:
    return (v & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL and (v & 0xfffffffffffffULL) != 0

cdef inline int issnan_d(uint64_t v) noexcept nogil:
    return isnan_d(v) and not (v & 0x8000000000000ULL)


cdef uint64_t fclass(uint64_t v, int dbl) noexcept nogil:
    cdef int sign, expmax, exp0, frac0, quiet
    if dbl:
        sign = v >> 63
        expmax = (v & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL
        exp0 = (v & 0x7ff0000000000000ULL) == 0
        frac0 = (v & 0xfffffffffffffULL) == 0
        quiet = (v >> 51) & 1
    else:
        sign = (v >> 31) & 1
        expmax = (v & 0x7f800000U) == 0x7f800000U
        exp0 = (v & 0x7f800000U) == 0
        frac0 = (v & 0x7fffff) == 0
        quiet = (v >> 22) & 1
    if expmax:
        if frac0:
            return 1 if sign else 1 << 7
        return 1 << 9 if quiet else 1 << 8
    if exp0:
        if frac0:
            return 1 << 3 if sign else 1 << 4
        return 1 << 2 if sign else 1 << 5
    return 1 << 1 if sign else 1 << 6


cdef uint64_t fminmax(uint64_t a, uint64_t b, int dbl, int is_max, uint32_t *fl) noexcept nogil:
    cdef int an, bn, alt
    cdef double da, db
    if dbl:
        an = isnan_d(a)
        bn = isnan_d(b)
        if issnan_d(a) or issnan_d(b):
            fl[0] |= 16
        if an and bn:
            return 0x7ff8000000000000ULL
        if an: return b
        if bn: return a
        da = rvf_d(a)
        db = rvf_d(b)
    else:
        an = isnan_s(<uint32_t>a)
        bn = isnan_s(<uint32_t>b)
        if issnan_s(<uint32_t>a) or issnan_s(<uint32_t>b):
            fl[0] |= 16
        if an and bn:
            return 0x7fc00000U
        if an: return b
        if bn: return a
        da = rvf_s(<uint32_t>a)
        db = rvf_s(<uint32_t>b)
    if da == db:                  # equal, incl. -0 == +0: order by sign
        alt = (a >> (63 if dbl else 31)) & 1     # a negative
        if is_max:
            return b if alt else a
        return a if alt else b
    if is_max:
        return a if da > db else b
    return a if da < db else b


cdef int fcmp(uint64_t a, uint64_t b, int dbl, int kind, uint32_t *fl) noexcept nogil:
    """kind 2 feq (quiet), 1 flt, 0 fle (signalling)."""
    cdef int an, bn
    cdef double da, db
    if dbl:
        an = isnan_d(a)
        bn = isnan_d(b)
        if an or bn:
            if kind != 2 or issnan_d(a) or issnan_d(b):
                fl[0] |= 16
            return 0
        da = rvf_d(a)
        db = rvf_d(b)
    else:
        an = isnan_s(<uint32_t>a)
        bn = isnan_s(<uint32_t>b)
        if an or bn:
            if kind != 2 or issnan_s(<uint32_t>a) or issnan_s(<uint32_t>b):
                fl[0] |= 16
            return 0
        da = rvf_s(<uint32_t>a)
        db = rvf_s(<uint32_t>b)
    if kind == 2: return da == db
    if kind == 1: return da < db
    return da <= db


cdef int exec_fload(Hart h, Rec *r) noexcept nogil:
    cdef uint64_t a = h.x[r.rs1] + <int64_t>r.imm, v = 0
    cdef int res
    if fs_off(h):
        return illegal(h, r)
    res = load_slow(h, a, 4 if r.op == OP_FLW else 8, &v)
    if res:
        return res
    h.f[r.rd] = box(<uint32_t>v) if r.op == OP_FLW else v
    fs_dirty(h)
    return 0


cdef int exec_fstore(Hart h, Rec *r) noexcept nogil:
    cdef uint64_t a = h.x[r.rs1] + <int64_t>r.imm
    if fs_off(h):
        return illegal(h, r)
    if r.op == OP_FSW:
        return store_slow(h, a, 4, h.f[r.rs2] & 0xffffffffU)
    return store_slow(h, a, 8, h.f[r.rs2])


cdef int exec_fp(Hart h, Rec *r) noexcept nogil:
    cdef uint32_t b = r.bits
    cdef uint32_t opc = b & 0x7f, f7 = b >> 25, f5 = b >> 27
    cdef int fmt = f7 & 3, rm = (b >> 12) & 7, rd = r.rd, rs2 = r.rs2
    cdef int dbl = fmt == 1, op = -1, res
    cdef uint64_t a = h.f[r.rs1], bb = h.f[rs2], c = h.f[(b >> 27) & 31], v = 0, sgn
    cdef unsigned fl = 0
    cdef uint32_t sa, sb, sc
    if fs_off(h) or fmt > 1:
        return illegal(h, r)
    if rm == 7:
        rm = h.frm
    if not dbl:
        sa = unbox(a)
        sb = unbox(bb)
        sc = unbox(c)
    if opc != 0x53:                                    # fused multiply-add family
        if rm > 4:
            return illegal(h, r)
        op = 5 + ((opc >> 2) & 3)
        if dbl:
            v = rvf_arith_d(op, rvf_d(a), rvf_d(bb), rvf_d(c), rm, &fl)
        else:
            v = box(rvf_arith_s(op, rvf_s(sa), rvf_s(sb), rvf_s(sc), rm, &fl))
        h.f[rd] = v
    elif f5 <= 3 or f5 == 0x0b:                        # add sub mul div sqrt
        if rm > 4 or (f5 == 0x0b and rs2 != 0):
            return illegal(h, r)
        op = f5 if f5 <= 3 else 4
        if dbl:
            v = rvf_arith_d(op, rvf_d(a), rvf_d(bb), 0.0, rm, &fl)
        else:
            v = box(rvf_arith_s(op, rvf_s(sa), rvf_s(sb), 0.0, rm, &fl))
        h.f[rd] = v
    elif f5 == 0x04:                                   # fsgnj / fsgnjn / fsgnjx
        rm = (b >> 12) & 7
        if rm > 2:
            return illegal(h, r)
        if dbl:
            sgn = bb & 0x8000000000000000ULL
            if rm == 1: sgn ^= 0x8000000000000000ULL
            elif rm == 2: sgn = (a ^ bb) & 0x8000000000000000ULL
            h.f[rd] = (a & 0x7fffffffffffffffULL) | sgn
        else:
            sgn = sb & 0x80000000U
            if rm == 1: sgn ^= 0x80000000U
            elif rm == 2: sgn = (sa ^ sb) & 0x80000000U
            h.f[rd] = box(<uint32_t>((sa & 0x7fffffffU) | sgn))
    elif f5 == 0x05:                                   # fmin / fmax
        rm = (b >> 12) & 7
        if rm > 1:
            return illegal(h, r)
        if dbl:
            h.f[rd] = fminmax(a, bb, 1, rm, &fl)
        else:
            h.f[rd] = box(<uint32_t>fminmax(sa, sb, 0, rm, &fl))
    elif f5 == 0x08:                                   # fcvt.s.d / fcvt.d.s
        if rm > 4 or (dbl and rs2 != 0) or (not dbl and rs2 != 1):
            return illegal(h, r)
        if dbl:
            h.f[rd] = rvf_s_to_d(rvf_s(unbox(a)), &fl)
        else:
            h.f[rd] = box(rvf_d_to_s(rvf_d(a), rm, &fl))
    elif f5 == 0x14:                                   # feq flt fle
        rm = (b >> 12) & 7
        if rm > 2:
            return illegal(h, r)
        if dbl:
            v = fcmp(a, bb, 1, rm, &fl)
        else:
            v = fcmp(sa, sb, 0, rm, &fl)
        h.x[rd if rd else 32] = v
    elif f5 == 0x18:                                   # fcvt.{w,wu,l,lu}.{s,d}
        if rm > 4 or rs2 > 3:
            return illegal(h, r)
        h.x[rd if rd else 32] = rvf_to_int(rvf_d(a) if dbl else <double>rvf_s(sa), rs2, rm, &fl)
    elif f5 == 0x1a:                                   # fcvt.{s,d}.{w,wu,l,lu}
        if rm > 4 or rs2 > 3:
            return illegal(h, r)
        h.f[rd] = rvf_from_int(h.x[r.rs1], rs2, dbl, rm, &fl)
    elif f5 == 0x1c:                                   # fmv.x.{w,d} / fclass
        rm = (b >> 12) & 7
        if rs2 != 0 or rm > 1:
            return illegal(h, r)
        if rm == 0:
            v = a if dbl else <uint64_t><int64_t><int32_t><uint32_t>a
        else:
            v = fclass(a, 1) if dbl else fclass(sa, 0)
        h.x[rd if rd else 32] = v
        return 0                                       # no FP state change
    elif f5 == 0x1e:                                   # fmv.{w,d}.x
        if rs2 != 0 or (b >> 12) & 7:
            return illegal(h, r)
        h.f[rd] = h.x[r.rs1] if dbl else box(<uint32_t>h.x[r.rs1])
    else:
        return illegal(h, r)
    h.fflags |= fl
    fs_dirty(h)
    return 0
