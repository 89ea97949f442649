/* The host's side of bench_kvm.py's CPL3 compute comparison: the guest's loop
 * (add rcx to rax, dec rcx, jnz) run natively.  usage: kvm_host_loop N
 * -> prints "<sum> <nanoseconds>" */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    uint64_t n = strtoull(argc > 1 ? argv[1] : "100000000", NULL, 0), sum = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    __asm__ volatile("1: add %%rcx, %%rax\n\tdec %%rcx\n\tjnz 1b"
                     : "+a"(sum), "+c"(n) : : "cc");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%llu %lld\n", (unsigned long long)sum,
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
