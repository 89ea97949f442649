/*
 * entry: the processor state a PVH kernel finds at its entry point and may
 * rely on: CR0, CR4, EFER, EFLAGS (saved by pvh.S before it changes them), the
 * local APIC's base MSR, version and spurious-vector register, and the
 * start_info fields that do not depend on where the loader put things.
 * Exits with 0x27 (status 79).
 */
#include "guest.h"

extern uint32_t entry_eflags;

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void show(const char *name, uint32_t v)
{
    puts(name);
    puts(" 0x");
    puthex(v, 8);
    putc('\n');
}

int main(const struct hvm_start_info *si)
{
    uint32_t cr0, cr4;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    puts("entry:\n");
    show("cr0", cr0);
    show("cr4", cr4);
    show("eflags", entry_eflags);
    show("efer", (uint32_t)rdmsr(0xc0000080));
    uint64_t apic_base = rdmsr(0x1b);
    show("apic base msr", (uint32_t)apic_base);
    /* Bit 24 (EOI-broadcast suppression) is left out: KVM offers it only when
     * the I/O APIC is not in the kernel, as in QEMU's microvm, whose irqchip is
     * split by default (kernel-irqchip=split); vmforge's is all in the kernel. */
    show("lapic version", mmio_read32(LAPIC_BASE + 0x30) & 0x00ffffff);
    show("lapic svr", mmio_read32(LAPIC_BASE + LAPIC_SVR));
    show("start_info magic", si->magic);
    show("start_info version", si->version);
    show("start_info flags", si->flags);
    show("start_info modules", si->nr_modules);
    show("start_info rsdp", (uint32_t)si->rsdp_paddr);
    debug_exit(0x27);
}
