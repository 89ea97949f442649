/*
 * reboot (run without -no-reboot): a triple fault resets the machine, which
 * enters the guest again from the start.  A boot counter in RAM counts the
 * boots (QEMU keeps RAM across a reset); the third boot exits with 0x24
 * (status 73).
 */
#include "guest.h"

int main(const struct hvm_start_info *si)
{
    uint32_t boot = count_boot();
    puts("reboot: boot ");
    putdec(boot);
    puts(si->magic == START_INFO_MAGIC ? ", start_info ok\n" : ", bad start_info\n");
    if (boot < 3) {
        puts("triple fault next\n");
        triple_fault();
    }
    puts("bye\n");
    debug_exit(0x24);
}
