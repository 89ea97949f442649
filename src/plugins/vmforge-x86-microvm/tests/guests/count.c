/*
 * count: prints "count N" for N = 0 .. COUNT-1 to the 8250 serial.  Between two
 * lines it adds one to a counter in the first word of each page of a 1 MiB
 * array in turn (DELAY additions, DELAY/256 per page), then checks every page's
 * counter is (N + 1) * DELAY/256 ("count: page P holds X, not Y" and status 3
 * if not).  Migrated while it counts, the destination must go on from where
 * the source stopped, and a page written after it was sent and not sent again
 * (a write the dirty log missed) leaves its counter behind for good.  At the
 * end "count: done" and isa-debug-exit with 0x21 (status 67).
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

int main(const struct hvm_start_info *si)
{
    (void)si;
    puts("count: start\n");
    for (uint32_t n = 0; n < COUNT; n++) {
        for (uint32_t d = 0; d < DELAY; d++)
            area[(d % PAGES) * 1024]++;
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
