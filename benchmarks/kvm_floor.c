/* The floor for bench_kvm.py: the guest the Python variants run (kvm_guests/pio.S
 * or mmio.S, a flat binary loaded at 0x1000), set up as vmforge.accel.kvm's
 * enter_long_mode(user=True) does (64-bit, CPL3, IOPL 3, 2 MiB of RAM, 1 GiB
 * mapped 1:1 by 2 MiB pages at 0x10000) and run by KVM_RUN in a C loop with a
 * trivial handler: an `in` or MMIO load is answered with the last value written.
 * KVM ties a VM to the process that made it, so this program makes its own.
 * usage: kvm_floor GUEST.bin N pio|mmio
 *   -> prints "<exits> <nanoseconds> <value> <CPU nanoseconds (user + system)>" */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); exit(1); } } while (0)
#define RAM 0x200000
#define CODE 0x1000
#define PAGES 0x10000
#define PORT 0x10
#define MMIO_ADDR 0x10000000

static long long cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL
           + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

static void seg(struct kvm_segment *s, uint16_t sel, int code)
{
    memset(s, 0, sizeof(*s));
    s->limit = 0xffffffff; s->selector = sel | 3; s->type = code ? 11 : 3;
    s->present = 1; s->dpl = 3; s->db = !code; s->s = 1; s->l = code; s->g = 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kvm_floor GUEST.bin N pio|mmio\n");
        return 2;
    }
    long n = atol(argv[2]), done = 0;
    int mmio = strcmp(argv[3], "mmio") == 0;
    uint8_t *mem = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int guest = open(argv[1], O_RDONLY);
    CHECK(guest);
    CHECK(read(guest, mem + CODE, PAGES - CODE));
    close(guest);
    uint64_t *pml4 = (uint64_t *)(mem + PAGES), *pdpt = pml4 + 512, *pd = pdpt + 512;
    pml4[0] = (PAGES + 0x1000) | 7;
    pdpt[0] = (PAGES + 0x2000) | 7;
    for (int i = 0; i < 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x87;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    CHECK(kvm);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = RAM, .userspace_addr = (uint64_t)mem};
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region));
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    CHECK(vcpu);
    int nent = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = nent;
    CHECK(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid));
    CHECK(ioctl(vcpu, KVM_SET_CPUID2, cpuid));
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    CHECK(size);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    CHECK(ioctl(vcpu, KVM_GET_SREGS, &sregs));
    seg(&sregs.cs, 0x18, 1);
    seg(&sregs.ds, 0x20, 0);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    memset(&sregs.tr, 0, sizeof(sregs.tr));
    sregs.tr.limit = 0x67; sregs.tr.type = 11; sregs.tr.present = 1;
    sregs.gdt.base = 0; sregs.gdt.limit = 39;
    sregs.cr3 = PAGES;
    sregs.cr4 = 0x620;                  /* PAE, OSFXSR, OSXMMEXCPT */
    sregs.cr0 = 0x80010033;             /* PG, WP, NE, ET, MP, PE */
    sregs.efer = 0x501;                 /* LMA, LME, SCE */
    CHECK(ioctl(vcpu, KVM_SET_SREGS, &sregs));
    struct kvm_regs regs = {.rip = CODE, .rsp = 0x9000, .rflags = 0x3002};
    CHECK(ioctl(vcpu, KVM_SET_REGS, &regs));

    uint32_t value = 0;
    struct timespec t0, t1;
    long long c0 = cpu_ns();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (done < n) {
        CHECK(ioctl(vcpu, KVM_RUN, 0));
        if (!mmio && run->exit_reason == KVM_EXIT_IO && run->io.port == PORT
            && run->io.size == 4 && run->io.count == 1) {
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            if (run->io.direction == KVM_EXIT_IO_OUT)
                memcpy(&value, data, 4);
            else
                memcpy(data, &value, 4);
        } else if (mmio && run->exit_reason == KVM_EXIT_MMIO
                   && run->mmio.phys_addr == MMIO_ADDR && run->mmio.len == 4) {
            if (run->mmio.is_write)
                memcpy(&value, run->mmio.data, 4);
            else
                memcpy(run->mmio.data, &value, 4);
        } else {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 5;
        }
        done++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long c1 = cpu_ns();
    printf("%ld %lld %u %lld\n", done,
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec), value,
           c1 - c0);
    return 0;
}
