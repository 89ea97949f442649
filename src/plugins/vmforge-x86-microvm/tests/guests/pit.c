/*
 * pit: an interrupt from the PIT's channel 0 (one-shot, mode 0),
 * through the I/O APIC (pins 0 and 2 routed to two vectors: the MP table sends
 * ISA IRQ 0 to pin 2), or built with VIA_PIC=1 through the 8259 PIC and the
 * local APIC's LINT0 in ExtINT mode, which it prints as it finds them at entry
 * and then sets itself.  Exits with 0x25 (status 75).
 */
#include "guest.h"

#define PIN0_VECTOR 0x26
#define PIN2_VECTOR 0x27
#define PIC_BASE    0x28                /* the master PIC's IRQ 0 */
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#ifndef VIA_PIC
#define VIA_PIC 0
#endif

static volatile int ticks;

void irq_handler(uint32_t vector)
{
    puts("irq: vector 0x");
    puthex(vector, 2);
    if (vector == PIN0_VECTOR || vector == PIN2_VECTOR) {
        puts(vector == PIN0_VECTOR ? " (i/o apic pin 0)\n" : " (i/o apic pin 2)\n");
        lapic_eoi();
    } else if (vector == PIC_BASE) {
        puts(" (pic irq 0)\n");
        outb(0x20, 0x20);               /* non-specific EOI to the master PIC */
    } else {
        putc('\n');
        return;
    }
    ticks++;
}

static void pit_one_shot(uint16_t count)
{
    outb(0x43, 0x30);                   /* channel 0, low then high byte, mode 0 */
    outb(0x40, (uint8_t)count);
    outb(0x40, (uint8_t)(count >> 8));
}

static void mask_pin(int pin)
{
    mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
    mmio_write32(IOAPIC_BASE + 0x10, 1u << 16);
}

int main(const struct hvm_start_info *si)
{
    (void)si;
    puts("pit: start\n");
    idt_init();
    idt_set(PIN0_VECTOR, irq_stub_0x26);
    idt_set(PIN2_VECTOR, irq_stub_0x27);
    idt_set(PIC_BASE, irq_stub_0x28);
    pic_mask_all();
    lapic_enable();
    if (!VIA_PIC) {
        ioapic_route(0, PIN0_VECTOR, 0, 0);
        ioapic_route(2, PIN2_VECTOR, 0, 0);
        pit_one_shot(1193);             /* 1 ms */
        wait_for_change(&ticks, 0);
        mask_pin(0);
        mask_pin(2);
    } else {
        for (uint32_t reg = LAPIC_LVT_LINT0; reg <= LAPIC_LVT_LINT1; reg += 0x10) {
            uint32_t lvt = mmio_read32(LAPIC_BASE + reg);
            puts(reg == LAPIC_LVT_LINT0 ? "lapic lint0 at entry: " : "lapic lint1 at entry: ");
            puts("delivery mode ");
            putdec((lvt >> 8) & 7);
            puts(lvt & (1u << 16) ? ", masked\n" : ", not masked\n");
        }
        mmio_write32(LAPIC_BASE + LAPIC_LVT_LINT0, 0x700);     /* ExtINT */
        outb(0x20, 0x11);               /* the master PIC again: vectors PIC_BASE.. */
        outb(0x21, PIC_BASE);
        outb(0x21, 0x04);
        outb(0x21, 0x01);
        outb(0x21, 0xfe);               /* only IRQ 0 */
        pit_one_shot(1193);
        wait_for_change(&ticks, 0);
        outb(0x21, 0xff);
    }

    puts("interrupts ");
    putdec((uint32_t)ticks);
    puts("\nbye\n");
    debug_exit(0x25);
}
