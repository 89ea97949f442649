/* The host's side of bench_kvm's compute comparison: the compute guest's own bytes
 * (compute.S, a flat binary) mapped executable here and its FNV-1a function (at
 * offset 16) called natively on the same buffer as the guest's.
 * usage: host_compute BINARY LEN ROUNDS  -> prints "<hash> <nanoseconds>" */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t (*fnv_fn)(const uint8_t *, uint64_t, uint64_t);

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: host_compute BINARY LEN ROUNDS\n");
        return 2;
    }
    uint64_t len = strtoull(argv[2], NULL, 0), rounds = strtoull(argv[3], NULL, 0);
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    uint8_t *code = mmap(NULL, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    uint8_t *buf = malloc(len);
    if (code == MAP_FAILED || buf == NULL) {
        perror("mmap");
        return 1;
    }
    for (uint64_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    fnv_fn fnv = (fnv_fn)(void *)(code + 16);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t h = fnv(buf, len, rounds);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%llu %lld\n", (unsigned long long)h,
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
