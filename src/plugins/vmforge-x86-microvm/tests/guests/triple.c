/*
 * triple: prints a line, then triple faults (#UD with an empty IDT: #GP, then
 * #DF, then shutdown).  With -no-reboot QEMU ends the run; without it the
 * machine resets.
 */
#include "guest.h"

int main(const struct hvm_start_info *si)
{
    (void)si;
    puts("triple: fault next\n");
    triple_fault();
    puts("not reached\n");
    debug_exit(0x7e);
}
