/*
 * cpuid: prints every CPUID leaf the vCPU offers (basic, hypervisor, extended;
 * leaves 4, 7, 0xb and 0xd with their sub-leaves), one line each:
 *   LEAF.SUB: EAX EBX ECX EDX
 * so that vmforge's CPU model can be compared with QEMU's.
 */
#include "guest.h"

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
}

static void show(uint32_t leaf, uint32_t sub)
{
    uint32_t r[4];
    cpuid(leaf, sub, r);
    puthex(leaf, 8);
    putc('.');
    puthex(sub, 2);
    putc(':');
    for (int i = 0; i < 4; i++) {
        putc(' ');
        puthex(r[i], 8);
    }
    putc('\n');
}

static void range(uint32_t base)
{
    uint32_t r[4];
    cpuid(base, 0, r);
    uint32_t max = r[0];
    if (max < base || max > base + 0x40)
        max = base;
    for (uint32_t leaf = base; leaf <= max; leaf++) {
        int subs = 1;
        if (leaf == 4 || leaf == 0xb)
            subs = 4;
        else if (leaf == 7)
            subs = 2;
        else if (leaf == 0xd)
            subs = 3;
        for (int sub = 0; sub < subs; sub++)
            show(leaf, sub);
    }
}

int main(const struct hvm_start_info *si)
{
    (void)si;
    range(0);
    range(0x40000000);
    range(0x80000000);
    debug_exit(0x10);
}
