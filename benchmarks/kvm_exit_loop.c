/* The floor for bench_kvm.py: the same guest as the Python variants (at CPL3 in long
 * mode, "1: out %al, (%dx); jmp 1b", or for MMIO "1: mov %eax, (%rbx); jmp 1b" with
 * rbx past the RAM), set up and run by KVM_RUN in a C loop.  KVM ties a VM to the
 * process that made it, so this program makes its own.
 * usage: kvm_exit_loop N [pio|mmio]  -> prints "<exits> <nanoseconds>" */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); exit(1); } } while (0)

static void seg(struct kvm_segment *s, uint16_t sel, int code)
{
    memset(s, 0, sizeof(*s));
    s->limit = 0xffffffff; s->selector = sel | 3; s->type = code ? 11 : 3;
    s->present = 1; s->dpl = 3; s->db = !code; s->s = 1; s->l = code; s->g = 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000, done = 0;
    int mmio = argc > 2 && strcmp(argv[2], "mmio") == 0;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    CHECK(kvm);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm);
    size_t memsz = 0x200000;
    uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    static const uint8_t pio_code[] = {0xee, 0xeb, 0xfd};
    static const uint8_t mmio_code[] = {0x89, 0x03, 0xeb, 0xfc};
    if (mmio)
        memcpy(mem + 0x1000, mmio_code, sizeof(mmio_code));
    else
        memcpy(mem + 0x1000, pio_code, sizeof(pio_code));
    uint64_t *pml4 = (uint64_t *)(mem + 0x10000), *pdpt = pml4 + 512, *pd = pdpt + 512;
    pml4[0] = 0x11000 | 7;
    pdpt[0] = 0x12000 | 7;
    for (int i = 0; i < 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x87;
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (uint64_t)mem};
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region));
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    CHECK(vcpu);
    int nent = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = nent;
    CHECK(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid));
    CHECK(ioctl(vcpu, KVM_SET_CPUID2, cpuid));
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    CHECK(ioctl(vcpu, KVM_GET_SREGS, &sregs));
    seg(&sregs.cs, 0x18, 1);
    seg(&sregs.ds, 0x20, 0);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    memset(&sregs.tr, 0, sizeof(sregs.tr));
    sregs.tr.limit = 0x67; sregs.tr.type = 11; sregs.tr.present = 1;
    sregs.cr3 = 0x10000;
    sregs.cr4 = 0x620;
    sregs.cr0 = 0x80010033;
    sregs.efer = 0x501;
    CHECK(ioctl(vcpu, KVM_SET_SREGS, &sregs));
    struct kvm_regs regs = {.rip = 0x1000, .rsp = 0x9000, .rdx = 0x10, .rbx = 0x300000,
                            .rflags = 0x3002};
    CHECK(ioctl(vcpu, KVM_SET_REGS, &regs));

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (done < n) {
        CHECK(ioctl(vcpu, KVM_RUN, 0));
        if (mmio ? run->exit_reason != KVM_EXIT_MMIO || run->mmio.phys_addr != 0x300000
                 : run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10) {
            fprintf(stderr, "exit %u\n", run->exit_reason);
            return 5;
        }
        done++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%ld %lld\n", done,
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
