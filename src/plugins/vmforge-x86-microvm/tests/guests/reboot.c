/*
 * reboot (run without -no-reboot): a triple fault resets the machine, which
 * enters the guest again from the start.  A boot counter at MARK, in RAM no
 * one else uses, counts the boots (QEMU keeps RAM across a reset); the third
 * boot exits with 0x24 (status 73).
 */
#include "guest.h"

#define MARK 0x80000u
#define MARK_MAGIC 0x746f6f62u          /* "boot" */

int main(const struct hvm_start_info *si)
{
    volatile uint32_t *mark = PHYS(volatile uint32_t *, MARK);
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) empty = { 0, 0 };
    if (mark[0] != MARK_MAGIC) {
        mark[0] = MARK_MAGIC;
        mark[1] = 0;
    }
    mark[1]++;
    puts("reboot: boot ");
    putdec(mark[1]);
    puts(si->magic == START_INFO_MAGIC ? ", start_info ok\n" : ", bad start_info\n");
    if (mark[1] < 3) {
        puts("triple fault next\n");
        __asm__ volatile("lidt %0; ud2" :: "m"(empty));
    }
    puts("bye\n");
    debug_exit(0x24);
}
