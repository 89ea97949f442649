/*
 * triple: prints a line, loads an empty IDT and executes ud2: #UD cannot be
 * delivered (#GP, then #DF, then shutdown), a triple fault.  With -no-reboot
 * QEMU ends the run; without it the machine resets.
 */
#include "guest.h"

int main(const struct hvm_start_info *si)
{
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) empty = { 0, 0 };
    (void)si;
    puts("triple: fault next\n");
    __asm__ volatile("lidt %0; ud2" :: "m"(empty));
    puts("not reached\n");
    debug_exit(0x7e);
}
