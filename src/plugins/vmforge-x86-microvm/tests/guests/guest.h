/* What the PVH guests share: port and MMIO access, the console, the IDT,
 * the local APIC and I/O APIC of QEMU's microvm, isa-debug-exit. */
#ifndef GUEST_H
#define GUEST_H

#include <stdint.h>

#define START_INFO_MAGIC 0x336ec578u    /* XEN_HVM_START_MAGIC_VALUE */

struct hvm_start_info {                 /* Xen's public/arch-x86/hvm/start_info.h */
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;              /* version >= 1 */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

#define LAPIC_BASE   0xfee00000u
#define LAPIC_ID     0x020
#define LAPIC_EOI    0x0b0
#define LAPIC_SVR    0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV  0x3e0
#define IOAPIC_BASE  0xfec00000u
#define COM1         0x3f8

#ifndef DEBUG_EXIT_PORT
#define DEBUG_EXIT_PORT 0xf4
#endif

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t mmio_read32(uint32_t addr) { return *(volatile uint32_t *)(uintptr_t)addr; }
static inline void mmio_write32(uint32_t addr, uint32_t v) { *(volatile uint32_t *)(uintptr_t)addr = v; }
/* a physical address start_info gives, as a pointer */
#define PHYS(type, addr) ((type)(uintptr_t)(addr))
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* console (COM1, polled) */
void putc(char c);
void puts(const char *s);
void puthex(uint32_t v, int digits);
void putdec(uint32_t v);

/* the first place ``word`` occurs in ``s`` (a null ``s`` has none), or null */
const char *find(const char *s, const char *word);
/* a decimal or 0x-prefixed hex number at *p, *p moved past it */
uint32_t parse_number(const char **p);

/* a triple fault (an exception with an empty IDT): with -no-reboot QEMU ends
 * the run, without it the machine resets */
void triple_fault(void);
/* 1 on the first boot, then one more on each boot after a reset: a counter in
 * RAM at 0x80000, which no loader uses and QEMU keeps across a reset */
uint32_t count_boot(void);

/* isa-debug-exit: QEMU exits with status (value << 1) | 1 */
void debug_exit(uint8_t value) __attribute__((noreturn));

/* interrupts */
void idt_init(void);
void idt_set(int vector, void (*stub)(void));
void irq_handler(uint32_t vector);      /* each guest defines it */
void pic_mask_all(void);
void lapic_enable(void);
void lapic_eoi(void);
void ioapic_route(int pin, int vector, int dest, int level);
/* Wait with interrupts on (sti; hlt) until an interrupt handler changes *v
 * from old; interrupts are off again on return. */
static inline void wait_for_change(volatile int *v, int old)
{
    while (*v == old)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

#define VECTOR(v) void irq_stub_##v(void);
#include "vectors.h"
#undef VECTOR

void *memset(void *d, int c, uint32_t n);
void *memcpy(void *d, const void *s, uint32_t n);

#endif
