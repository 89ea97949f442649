/* The HTIF syscall proxy (spike's, which QEMU does not have): write(1, ...) and
 * a bad buffer address, then exit through the exit syscall. */
#include <stdint.h>

extern volatile uint64_t tohost, fromhost;
#define barrier() __asm__ volatile("" ::: "memory")

static long syscall3(long n, long a0, long a1, long a2) {
    volatile uint64_t magic[8] = {n, a0, a1, a2};
    barrier();
    tohost = (uint64_t)magic;
    while (fromhost == 0) ;
    fromhost = 0;
    barrier();
    return (long)magic[0];
}

int main(void) {
    static const char msg[] = "written by the syscall proxy\n";
    if (syscall3(64, 1, (long)msg, sizeof msg - 1) != sizeof msg - 1) return 10;
    if (syscall3(64, 1, 0x10, 4) != -14) return 11;        /* not RAM: -EFAULT */
    if (syscall3(12345, 0, 0, 0) != -38) return 12;        /* unknown: -ENOSYS */
    syscall3(93, 42, 0, 0);                                 /* exit(42) */
    return 13;
}
