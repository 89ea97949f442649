/*
 * count: prints "count N" for N = 0 .. COUNT-1 to the 8250 serial.  Between two
 * lines it adds one to a counter in the first word of each page of a 1 MiB
 * array in turn (DELAY additions, DELAY/256 per page), then checks every page's
 * counter is (N + 1) * DELAY/256 ("count: page P holds X, not Y" and status 3
 * if not).  Migrated while it counts, the destination must go on from where
 * the source stopped, and a page written after it was sent and not sent again
 * (a write the dirty log missed) leaves its counter behind for good.  At the
 * end "count: done" and isa-debug-exit with 0x21 (status 67).  TICKS=1: each
 * line also waits (sti; hlt) for the next tick of the PIT in periodic mode
 * (10 ms) through I/O APIC pin 2 and the local APIC, so a migration carries
 * the in-kernel PIT, I/O APIC and LAPIC state and a halted vCPU.
 */
#include "guest.h"

#ifndef COUNT
#define COUNT 200
#endif
#ifndef DELAY
#define DELAY 20480
#endif

#define PAGES 256
#if DELAY % PAGES
#error DELAY must be a multiple of 256
#endif
static volatile uint32_t area[PAGES * 1024] __attribute__((aligned(4096)));

#ifndef TICKS
#define TICKS 0
#endif
#define PIT_VECTOR 0x27
static volatile int ticks;

void irq_handler(uint32_t vector)
{
    if (vector == PIT_VECTOR)
        ticks++;
    lapic_eoi();
}

static void start_ticks(void)
{
    idt_init();
    idt_set(PIT_VECTOR, irq_stub_0x27);
    pic_mask_all();
    lapic_enable();
    ioapic_route(2, PIT_VECTOR, 0, 0);  /* ISA IRQ 0 is pin 2 (the MP table) */
    outb(0x43, 0x34);                   /* channel 0, low then high byte, mode 2 */
    outb(0x40, (uint8_t)11932);         /* 10 ms */
    outb(0x40, (uint8_t)(11932 >> 8));
}

int main(const struct hvm_start_info *si)
{
    (void)si;
    puts("count: start\n");
    if (TICKS)
        start_ticks();
    for (uint32_t n = 0; n < COUNT; n++) {
        for (uint32_t d = 0; d < DELAY; d++)
            area[(d % PAGES) * 1024]++;
        if (TICKS)
            wait_for_change(&ticks, ticks);
        uint32_t want = (n + 1) * (DELAY / PAGES);
        for (uint32_t p = 0; p < PAGES; p++) {
            if (area[p * 1024] != want) {
                puts("count: page ");
                putdec(p);
                puts(" holds ");
                putdec(area[p * 1024]);
                puts(", not ");
                putdec(want);
                putc('\n');
                debug_exit(1);
            }
        }
        puts("count ");
        putdec(n);
        putc('\n');
    }
    puts("count: done\n");
    debug_exit(0x21);
}
