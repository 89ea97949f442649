/* A C program as a compiler emits it (RV64GC, -O2): integer, M, F/D, calls, the
 * stack, byte/half/word accesses.  Each check returns its own failure number. */
#include <stdint.h>

static uint32_t crc32(const uint8_t *p, int n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (int i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    }
    return ~crc;
}

static void insertion_sort(int32_t *a, int n) {
    for (int i = 1; i < n; i++) {
        int32_t v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

static uint64_t fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static volatile double vd = 2.0;
static volatile float vf = 3.0f;

int main(void) {
    static const uint8_t msg[] = "123456789";
    if (crc32(msg, 9) != 0xCBF43926u) return 1;

    int32_t a[64];
    uint32_t s = 12345;
    for (int i = 0; i < 64; i++) { s = s * 1103515245u + 12345u; a[i] = (int32_t)s >> 8; }
    insertion_sort(a, 64);
    for (int i = 1; i < 64; i++) if (a[i - 1] > a[i]) return 2;

    if (fib(20) != 6765) return 3;

    /* 64-bit multiply/divide through the compiler */
    volatile int64_t x = -1234567890123LL, y = 97;
    if (x / y != -12727504021LL || x % y != -86) return 4;
    volatile uint64_t ux = 0xFFFFFFFFFFFFFFFFull;
    if (ux / 3 != 0x5555555555555555ull) return 5;

    /* floating point: the series is summed in the same order as on any IEEE host */
    double sum = 0;
    for (int i = 1; i <= 1000; i++) sum += 1.0 / ((double)i * i);
    union { double d; uint64_t u; } cv = { .d = sum };
    if (cv.u != 0x3ffa4d8e550a946eull) return 6;
    if (__builtin_sqrt(vd) * __builtin_sqrt(vd) != 2.0000000000000004) return 7;
    float f = vf;
    for (int i = 0; i < 10; i++) f = f * 1.5f - 0.25f;
    union { float f; uint32_t u; } fv = { .f = f };
    if (fv.u != 0x4310a9a0u) return 8;
    if ((int)(vd * -2.7) != -5 || (unsigned)(vd * 2.7) != 5) return 9;
    return 0;
}
