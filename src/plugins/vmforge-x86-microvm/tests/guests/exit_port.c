/*
 * exit_port: run with -device isa-debug-exit,iobase=EXIT_BASE,iosize=EXIT_SIZE.
 * Writes to 0xf4 (the usual port, not the device's here) and to the first
 * port past the device do nothing; a 16-bit write at EXIT_BASE + EXIT_AT ends
 * the run (QEMU: status ((value << 1) | 1) & 0xff; a write that runs past the
 * device's last port reaches it with its first byte only).
 */
#include "guest.h"

int main(const struct hvm_start_info *si)
{
    (void)si;
    puts("exit_port: writing 0xf4 and the port past the device\n");
    outb(0xf4, 0x01);
    outb(EXIT_BASE + EXIT_SIZE, 0x02);
    puts("still running\n");
    outw(EXIT_BASE + EXIT_AT, 0x0185);
    puts("not reached\n");
    debug_exit(0x7e);
}
