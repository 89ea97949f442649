/* Console, isa-debug-exit, IDT, PIC, local APIC and I/O APIC helpers for the
 * PVH guests (see guest.h). */
#include "guest.h"

void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))     /* LSR: transmitter holding register empty */
        ;
    outb(COM1, (uint8_t)c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

void puthex(uint32_t v, int digits)
{
    while (digits--)
        putc("0123456789abcdef"[(v >> (4 * digits)) & 15]);
}

void putdec(uint32_t v)
{
    char buf[11];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        putc(buf[--n]);
}

const char *find(const char *s, const char *word)
{
    for (; s && *s; s++) {
        int i = 0;
        while (word[i] && s[i] == word[i])
            i++;
        if (!word[i])
            return s;
    }
    return 0;
}

uint32_t parse_number(const char **p)
{
    const char *s = *p;
    uint32_t v = 0, base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        uint32_t d;
        if (*s >= '0' && *s <= '9')
            d = (uint32_t)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (uint32_t)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (uint32_t)(*s - 'A' + 10);
        else
            break;
        v = v * base + d;
    }
    *p = s;
    return v;
}

void triple_fault(void)
{
    struct {
        uint16_t limit;
        uintptr_t base;
    } __attribute__((packed)) empty = { 0, 0 };
    /* #UD with an empty IDT: #GP, then #DF, then shutdown */
    __asm__ volatile("lidt %0; ud2" :: "m"(empty));
}

#define BOOT_MARK 0x80000u
#define BOOT_MARK_MAGIC 0x746f6f62u     /* "boot" */

uint32_t count_boot(void)
{
    volatile uint32_t *mark = PHYS(volatile uint32_t *, BOOT_MARK);
    if (mark[0] != BOOT_MARK_MAGIC) {
        mark[0] = BOOT_MARK_MAGIC;
        mark[1] = 0;
    }
    return ++mark[1];
}

void debug_exit(uint8_t value)
{
    outb(DEBUG_EXIT_PORT, value);
    for (;;)
        __asm__ volatile("cli; hlt");
}

#ifdef __x86_64__
struct idt_gate {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, reserved;
} __attribute__((packed));

extern uint16_t code_selector;          /* flat64.S: the CS vmforge entered with */
#define CODE_SELECTOR code_selector
#else
struct idt_gate {
    uint16_t off_lo, sel;
    uint8_t zero, type;
    uint16_t off_hi;
} __attribute__((packed));

#define CODE_SELECTOR 0x08              /* pvh.S's GDT */
#endif

static struct idt_gate idt[256] __attribute__((aligned(16)));

void idt_set(int vector, void (*stub)(void))
{
    uintptr_t off = (uintptr_t)stub;
    memset(&idt[vector], 0, sizeof(idt[vector]));
    idt[vector].off_lo = (uint16_t)off;
    idt[vector].sel = CODE_SELECTOR;
    idt[vector].type = 0x8e;            /* present, DPL 0, interrupt gate */
#ifdef __x86_64__
    idt[vector].off_mid = (uint16_t)(off >> 16);
    idt[vector].off_hi = (uint32_t)(off >> 32);
#else
    idt[vector].off_hi = (uint16_t)(off >> 16);
#endif
}

void idt_init(void)
{
    struct {
        uint16_t limit;
        uintptr_t base;
    } __attribute__((packed)) desc = { sizeof(idt) - 1, (uintptr_t)idt };
    idt_set(0xff, irq_stub_0xff);       /* the local APIC's spurious vector */
    __asm__ volatile("lidt %0" :: "m"(desc));
}

/* The guests that take interrupts define their own. */
__attribute__((weak)) void irq_handler(uint32_t vector)
{
    puts("irq: unexpected vector ");
    puthex(vector, 2);
    putc('\n');
}

void pic_mask_all(void)
{
    /* Program both 8259s (vectors 0x20-0x2f), then mask every line: interrupts
     * come through the I/O APIC only. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xff); outb(0xa1, 0xff);
}

void lapic_enable(void)
{
    mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x1ff);  /* enabled, spurious vector 0xff */
}

void lapic_eoi(void)
{
    mmio_write32(LAPIC_BASE + LAPIC_EOI, 0);
}

void ioapic_route(int pin, int vector, int dest, int level)
{
    /* active high, fixed delivery, physical destination; edge or level triggered */
    mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
    mmio_write32(IOAPIC_BASE + 0x10, (uint32_t)dest << 24);
    mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
    mmio_write32(IOAPIC_BASE + 0x10, (uint32_t)vector | (level ? 1u << 15 : 0));
}

void *memset(void *d, int c, uint32_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, uint32_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
