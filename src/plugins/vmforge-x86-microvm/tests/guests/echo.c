/*
 * echo: the UART's received-data interrupt (IER bit 0, IRQ 4 through I/O APIC
 * pin 4): prints each byte that arrives on the console's input until a newline,
 * then exits with 0x26 (status 77).  The UART runs as an 8250 (one byte of
 * receive buffer) or, built with FIFO=1, as a 16550A with its 16-byte FIFOs.
 */
#include "guest.h"

#define UART_VECTOR 0x24
#ifndef FIFO
#define FIFO 0
#endif

static volatile int received;          /* bytes in buf so far */
static volatile char buf[256];

void irq_handler(uint32_t vector)
{
    if (vector == UART_VECTOR) {
        while (inb(COM1 + 5) & 0x01) {  /* LSR: data ready */
            char c = (char)inb(COM1);
            if (received < (int)sizeof(buf))
                buf[received++] = c;
        }
    }
    lapic_eoi();
}

int main(const struct hvm_start_info *si)
{
    (void)si;
    idt_init();
    idt_set(UART_VECTOR, irq_stub_0x24);
    pic_mask_all();
    lapic_enable();
    ioapic_route(4, UART_VECTOR, 0, 0);
    outb(COM1 + 2, FIFO ? 0x07 : 0x00); /* FCR: FIFOs on and cleared, or off */
    outb(COM1 + 4, 0x0b);               /* MCR: DTR, RTS, OUT2 */
    outb(COM1 + 1, 0x01);               /* IER: received data available */
    puts("echo: waiting for input\n");
    int seen = 0;
    char c = 0;
    while (c != '\n' && seen < (int)sizeof(buf)) {
        if (seen == received)
            wait_for_change(&received, seen);
        c = buf[seen++];
        puts("rx: 0x");
        puthex((uint8_t)c, 2);
        putc('\n');
    }
    outb(COM1 + 1, 0);
    puts("bye\n");
    debug_exit(0x26);
}
