/*
 * smp (run with -smp 2): the BSP finds the Intel MP table (the floating
 * pointer "_MP_" in the last KiB of base memory, the EBDA or the BIOS area),
 * checks its checksums and prints the processors it announces, then wakes each
 * other one with INIT-SIPI-SIPI through the local APIC's ICR.  An AP starts in
 * real mode in smp-trampoline.S, enters protected mode and prints its local
 * APIC ID; the BSP waits for it.  Then the BSP sends each AP a fixed IPI,
 * which the AP takes through its own local APIC and IDTR and reports; the BSP
 * waits for each, then exits with 0x23 (status 71).  Built with REBOOT=1 it
 * triple faults instead on its first boot, so that the second one finds the
 * APs waiting for a start-up IPI again.  With the
 * word "mptable" on the command line the BSP prints every entry of the table.
 * The entries are walked by the table's length, as Linux does (smp_read_mpc):
 * the table qboot writes for QEMU's microvm has 0 in its entry count.
 */
#include "guest.h"

#ifndef REBOOT
#define REBOOT 0
#endif
#define TRAMPOLINE 0x8000u
#define MAX_CPUS 16
#define IPI_VECTOR 0x29

extern const char trampoline_start[], trampoline_end[];

struct mpf {                            /* MP floating pointer structure */
    char signature[4];
    uint32_t physptr;
    uint8_t length, spec_rev, checksum, feature1, feature2, feature3[3];
} __attribute__((packed));

struct mpc {                            /* MP configuration table header */
    char signature[4];
    uint16_t length;
    uint8_t spec_rev, checksum;
    char oem[8], product[12];
    uint32_t oem_ptr;
    uint16_t oem_size, count;
    uint32_t lapic;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
} __attribute__((packed));

static volatile int aps_up, ipis_reported;
static volatile int ipis[MAX_CPUS];     /* by local APIC ID */
static uint8_t ap_stacks[MAX_CPUS][4096] __attribute__((aligned(16)));
uint32_t ap_stack;                      /* smp-trampoline.S: the next AP's stack top */

static uint8_t sum(const uint8_t *p, uint32_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

static const struct mpf *scan(uint32_t from, uint32_t to)
{
    for (uint32_t a = from; a + 16 <= to; a += 16) {
        const struct mpf *f = (const struct mpf *)a;
        if (f->signature[0] == '_' && f->signature[1] == 'M' && f->signature[2] == 'P' &&
            f->signature[3] == '_')
            return f;
    }
    return 0;
}

static void putn(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        putc(s[i]);
}

static uint32_t lapic_id(void)
{
    return mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
}

void irq_handler(uint32_t vector)
{
    if (vector == IPI_VECTOR) {
        uint32_t id = lapic_id();
        if (id < MAX_CPUS)
            ipis[id]++;
        lapic_eoi();
    }
}

void ap_main(void)
{
    uint32_t id = lapic_id();
    puts("ap up, lapic id ");
    putdec(id);
    putc('\n');
    idt_init();                         /* the IDTR is per CPU */
    lapic_enable();
    __atomic_add_fetch(&aps_up, 1, __ATOMIC_SEQ_CST);
    if (id >= MAX_CPUS)
        return;
    wait_for_change(&ipis[id], 0);
    puts("ap ");
    putdec(id);
    puts(": ipi vector 0x");
    puthex(IPI_VECTOR, 2);
    putc('\n');
    __atomic_add_fetch(&ipis_reported, 1, __ATOMIC_SEQ_CST);
}

static void icr(uint32_t apic_id, uint32_t low)
{
    mmio_write32(LAPIC_BASE + LAPIC_ICR_HI, apic_id << 24);
    mmio_write32(LAPIC_BASE + LAPIC_ICR_LO, low);
    while (mmio_read32(LAPIC_BASE + LAPIC_ICR_LO) & (1u << 12))  /* delivery pending */
        ;
}

static void print_entries(const struct mpc *t, int all)
{
    const uint8_t *e = (const uint8_t *)(t + 1), *end = (const uint8_t *)t + t->length;
    while (e < end) {
        switch (e[0]) {
        case 0:
            puts("cpu: lapic id ");
            putdec(e[1]);
            puts(e[3] & 1 ? ", enabled" : ", disabled");
            if (e[3] & 2)
                puts(", bsp");
            if (all) {
                puts(", lapic version 0x");
                puthex(e[2], 2);
            }
            putc('\n');
            e += 20;
            continue;
        case 1:
            if (all) {
                puts("bus ");
                putdec(e[1]);
                puts(": ");
                putn((const char *)e + 2, 6);
                putc('\n');
            }
            break;
        case 2:
            if (all) {
                puts("ioapic id ");
                putdec(e[1]);
                puts(" version 0x");
                puthex(e[2], 2);
                puts(e[3] & 1 ? " enabled" : " disabled");
                puts(" at 0x");
                puthex(*(const uint32_t *)(e + 4), 8);
                putc('\n');
            }
            break;
        case 3:
        case 4:
            if (all) {
                puts(e[0] == 3 ? "io irq: type " : "local irq: type ");
                putdec(e[1]);
                puts(" flags 0x");
                puthex(*(const uint16_t *)(e + 2), 4);
                puts(" bus ");
                putdec(e[4]);
                puts(" irq ");
                putdec(e[5]);
                puts(" -> apic ");
                putdec(e[6]);
                puts(" pin ");
                putdec(e[7]);
                putc('\n');
            }
            break;
        default:
            puts("unknown entry type ");
            putdec(e[0]);
            putc('\n');
            return;
        }
        e += 8;
    }
}

int main(const struct hvm_start_info *si)
{
    const char *cmdline = PHYS(const char *, si->cmdline_paddr);
    uint32_t boot = REBOOT ? count_boot() : 1;
    if (REBOOT) {
        puts("smp: boot ");
        putdec(boot);
        putc('\n');
    }
    puts("smp: bsp lapic id ");
    putdec(mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24);
    putc('\n');
    const struct mpf *f = scan(0x9fc00, 0xa0000);
    if (!f)
        f = scan((uint32_t)*(volatile uint16_t *)0x40e << 4, ((uint32_t)*(volatile uint16_t *)0x40e << 4) + 1024);
    if (!f)
        f = scan(0xf0000, 0x100000);
    if (!f) {
        puts("no MP floating pointer\n");
        debug_exit(2);
    }
    puts("mp floating pointer: spec rev ");
    putdec(f->spec_rev);
    puts(", checksum ");
    puts(sum((const uint8_t *)f, 16u * f->length) == 0 ? "ok" : "bad");
    puts(", default configuration ");
    putdec(f->feature1);
    putc('\n');
    if (!f->physptr) {
        puts("no configuration table\n");
        debug_exit(2);
    }
    const struct mpc *t = (const struct mpc *)f->physptr;
    puts("mp table: ");
    putn(t->signature, 4);
    puts(", spec rev ");
    putdec(t->spec_rev);
    puts(", checksum ");
    puts(sum((const uint8_t *)t, t->length) == 0 ? "ok" : "bad");
    puts(", lapic at 0x");
    puthex(t->lapic, 8);
    putc('\n');
    if (find(cmdline, "mptable")) {
        puts("length ");
        putdec(t->length);
        puts(", entry count field ");
        putdec(t->count);
        puts(", oem [");
        putn(t->oem, 8);
        puts("] product [");
        putn(t->product, 12);
        puts("]\n");
    }
    print_entries(t, find(cmdline, "mptable") != 0);

    idt_init();
    idt_set(IPI_VECTOR, irq_stub_0x29);
    lapic_enable();
    memcpy((void *)TRAMPOLINE, trampoline_start, (uint32_t)(trampoline_end - trampoline_start));
    const uint8_t *e = (const uint8_t *)(t + 1), *end = (const uint8_t *)t + t->length;
    int cpus = 0;
    while (e < end && e[0] <= 4) {
        if (e[0] == 0) {
            cpus++;
            if ((e[3] & 1) && !(e[3] & 2) && e[1] < MAX_CPUS) {
                int before = aps_up;
                ap_stack = (uint32_t)(ap_stacks[e[1]] + sizeof(ap_stacks[0]));
                icr(e[1], 0x4500);                      /* INIT, assert */
                icr(e[1], 0x4600 | (TRAMPOLINE >> 12)); /* start-up */
                icr(e[1], 0x4600 | (TRAMPOLINE >> 12));
                while (__atomic_load_n(&aps_up, __ATOMIC_SEQ_CST) == before)
                    __asm__ volatile("pause");
            }
            e += 20;
        } else
            e += 8;
    }
    for (uint32_t id = 0; id < MAX_CPUS; id++) {
        if (id == lapic_id())
            continue;
        int before = ipis_reported;
        e = (const uint8_t *)(t + 1);
        while (e < end && e[0] <= 4 && !(e[0] == 0 && e[1] == id && (e[3] & 1)))
            e += e[0] == 0 ? 20 : 8;
        if (e >= end || e[0] != 0)
            continue;
        icr(id, IPI_VECTOR);            /* fixed delivery, physical destination */
        while (__atomic_load_n(&ipis_reported, __ATOMIC_SEQ_CST) == before)
            __asm__ volatile("pause");
    }
    if (REBOOT && boot < 2) {
        puts("triple fault next\n");
        triple_fault();
    }
    puts("cpus announced ");
    putdec((uint32_t)cpus);
    puts(", aps up ");
    putdec((uint32_t)aps_up);
    puts("\nbye\n");
    debug_exit(0x23);
}
