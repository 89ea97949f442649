/*
 * hello: checks the PVH start_info, prints the command line and memory map it
 * points to, then takes two interrupts through the in-kernel irqchip: the
 * UART's transmitter-empty interrupt (IRQ 4 through I/O APIC pin 4) and a
 * one-shot local APIC timer.  Exits through isa-debug-exit with 0x21 (status 67).
 * The memory map start_info points to is printed when the command line has
 * the word "memmap", and the modules (-initrd) when there are some.  Built for x86-64 with flat64.S it is the flat-binary
 * guest, which prints the same after its first line.
 */
#include "guest.h"

#define UART_VECTOR  0x24
#define TIMER_VECTOR 0x30

static volatile int uart_irqs, timer_irqs;

void irq_handler(uint32_t vector)
{
    if (vector == UART_VECTOR) {
        uint8_t iir = inb(COM1 + 2);    /* reading IIR clears the THRE interrupt */
        outb(COM1 + 1, 0);              /* IER: no more interrupts */
        puts("irq: uart, iir ");
        puthex(iir & 0x0f, 1);
        putc('\n');
        uart_irqs++;
    } else if (vector == TIMER_VECTOR) {
        puts("irq: lapic timer\n");
        timer_irqs++;
    } else {
        puts("irq: unexpected vector ");
        puthex(vector, 2);
        putc('\n');
        return;                         /* a spurious interrupt takes no EOI */
    }
    lapic_eoi();
}

/*
 * The memory map as a kernel uses it: sorted by address, without empty entries
 * and without those inside 0xa0000-0x100000, which Linux reserves whatever the
 * map says (e820 trim_bios_range).  QEMU's firmware (qboot) adds entries there
 * and an empty one, and lists them in its own order; vmforge runs no firmware.
 */
static void print_memmap(const struct hvm_start_info *si)
{
    const struct hvm_memmap_table_entry *e =
        PHYS(const struct hvm_memmap_table_entry *, si->memmap_paddr);
    uint64_t after = 0;
    int first = 1;
    puts("memmap (sorted, outside 0xa0000-0x100000):\n");
    for (;;) {
        const struct hvm_memmap_table_entry *next = 0;
        for (uint32_t i = 0; i < si->memmap_entries; i++) {
            if (!e[i].size || (e[i].addr >= 0xa0000 && e[i].addr + e[i].size <= 0x100000))
                continue;
            if ((first || e[i].addr > after) && (!next || e[i].addr < next->addr))
                next = &e[i];
        }
        if (!next)
            break;
        first = 0;
        after = next->addr;
        puts("  ");
        puthex((uint32_t)(next->addr >> 32), 8);
        puthex((uint32_t)next->addr, 8);
        putc(' ');
        puthex((uint32_t)(next->size >> 32), 8);
        puthex((uint32_t)next->size, 8);
        puts(" type ");
        putdec(next->type);
        putc('\n');
    }
}

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

/* The modules (-initrd): where and how big, their first bytes. */
static void print_modules(const struct hvm_start_info *si)
{
    const struct hvm_modlist_entry *m =
        PHYS(const struct hvm_modlist_entry *, si->modlist_paddr);
    for (uint32_t i = 0; i < si->nr_modules; i++) {
        const uint8_t *p = PHYS(const uint8_t *, m[i].paddr);
        puts("module at 0x");
        puthex((uint32_t)m[i].paddr, 8);
        puts(" size ");
        putdec((uint32_t)m[i].size);
        puts(m[i].cmdline_paddr ? " with a command line:" : ":");
        for (int j = 0; j < 8 && (uint64_t)j < m[i].size; j++) {
            putc(' ');
            puthex(p[j], 2);
        }
        putc('\n');
    }
}

int main(const struct hvm_start_info *si)
{
#ifdef __x86_64__
    puts("hello: flat binary, 64-bit entry\n");
#else
    puts("hello: pvh entry\n");
#endif
    if (si->magic != START_INFO_MAGIC) {
        puts("bad start_info magic ");
        puthex(si->magic, 8);
        putc('\n');
        debug_exit(1);
    }
    puts("start_info version ");
    putdec(si->version);
    puts(" modules ");
    putdec(si->nr_modules);
    putc('\n');
    const char *cmdline = PHYS(const char *, si->cmdline_paddr);
    puts("cmdline: [");
    if (cmdline)
        puts(cmdline);
    puts("]\n");
    if (si->nr_modules)
        print_modules(si);
    if (cmdline && find(cmdline, "memmap") && si->version >= 1)
        print_memmap(si);

    idt_init();
    idt_set(UART_VECTOR, irq_stub_0x24);
    idt_set(TIMER_VECTOR, irq_stub_0x30);
    pic_mask_all();
    lapic_enable();
    puts("lapic id ");
    putdec(mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24);
    putc('\n');

    ioapic_route(4, UART_VECTOR, 0, 0);
    outb(COM1 + 4, 0x0b);               /* MCR: DTR, RTS, OUT2 (the IRQ line) */
    outb(COM1 + 1, 0x02);               /* IER: transmitter holding register empty */
    wait_for_change(&uart_irqs, 0);

    mmio_write32(LAPIC_BASE + LAPIC_TIMER_DIV, 0x0b);     /* divide by 1 */
    mmio_write32(LAPIC_BASE + LAPIC_LVT_TIMER, TIMER_VECTOR);  /* one-shot */
    mmio_write32(LAPIC_BASE + LAPIC_TIMER_INIT, 100000);
    wait_for_change(&timer_irqs, 0);

    puts("interrupts: uart ");
    putdec(uart_irqs);
    puts(" timer ");
    putdec(timer_irqs);
    puts("\nbye\n");
    debug_exit(0x21);
}
