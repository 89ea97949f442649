/* The CLINT at 0x2000000: a machine timer interrupt after mtimecmp, and a
 * software interrupt sent through msip; exits 0 when both arrived. */
#include <stdint.h>

#define CLINT 0x2000000UL
#define MSIP ((volatile uint32_t *)(CLINT + 0x0))
#define MTIMECMP ((volatile uint64_t *)(CLINT + 0x4000))
#define MTIME ((volatile uint64_t *)(CLINT + 0xbff8))

volatile int ticks, ipis;

void __attribute__((interrupt("machine"), aligned(4))) trap(void) {
    uint64_t cause;
    __asm__ volatile("csrr %0, mcause" : "=r"(cause));
    if (cause == 0x8000000000000007ULL) { ticks++; *MTIMECMP = ~0ULL; }
    if (cause == 0x8000000000000003ULL) { ipis++; *MSIP = 0; }
}

int main(void) {
    /* mtimecmp's reset value is unspecified (QEMU: 0): arm it before enabling */
    uint64_t t0 = *MTIME;
    *MTIMECMP = t0 + 50000;
    __asm__ volatile("csrw mtvec, %0" :: "r"(trap));
    __asm__ volatile("csrs mie, %0" :: "r"((1 << 7) | (1 << 3)));
    __asm__ volatile("csrs mstatus, %0" :: "r"(1 << 3));
    while (!ticks) __asm__ volatile("wfi");
    if (*MTIME < t0 + 50000) return 2;
    *MSIP = 1;
    for (int i = 0; i < 1000 && !ipis; i++) ;
    return ipis == 1 && ticks == 1 ? 0 : 3;
}
