/*
 * virtio_blk: a minimal virtio-blk driver over microvm's virtio-mmio.
 *
 * Scans the 8 transports at 0xfeb00000 + 512 * i for a block device (magic
 * "virt", device id 2), reads the IRQ the command line announces for it
 * (virtio_mmio.device=512@ADDR:IRQ) and routes it through the I/O APIC
 * (level triggered), initialises the device the way its transport version
 * says (1: legacy, QEMU 7.2's default; 2: modern, with VIRTIO_F_VERSION_1), sets
 * up queue 0 as a split ring of 8 descriptors, reads sectors 0 and 1 with one
 * request each (waiting for the interrupt, then checking the used ring), writes
 * sector 2 and reads it back, then exits with 0x22 (status 69); it counts the
 * interrupts that came with nothing new in the used ring.  It first lists the
 * transports that have a device.  Built with POLL=1 it polls the used ring
 * instead, the device's I/O APIC pin left masked; with INDIRECT=1 it negotiates
 * indirect descriptors and sends each request as one; with EVENT_IDX=1 it
 * negotiates used-buffer event indexes and, after the usual requests, sets
 * used_event so that the device skips one interrupt; with REQUESTS=1 it also
 * sends a flush, a get-id, a request of an unknown type and a read of sector
 * SECTORS_PAST_END (the disk's size: one past its end).
 */
#include "guest.h"

#define MMIO_BASE        0xfeb00000u
#define MAGIC            0x000
#define VERSION          0x004
#define DEVICE_ID        0x008
#define DEVICE_FEATURES  0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES  0x020
#define DRIVER_FEATURES_SEL 0x024
#define GUEST_PAGE_SIZE  0x028          /* legacy */
#define QUEUE_SEL        0x030
#define QUEUE_NUM_MAX    0x034
#define QUEUE_NUM        0x038
#define QUEUE_ALIGN      0x03c          /* legacy */
#define QUEUE_PFN        0x040          /* legacy */
#define QUEUE_READY      0x044
#define QUEUE_NOTIFY     0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK    0x064
#define STATUS           0x070
#define QUEUE_DESC_LOW   0x080
#define QUEUE_DESC_HIGH  0x084
#define QUEUE_AVAIL_LOW  0x090
#define QUEUE_AVAIL_HIGH 0x094
#define QUEUE_USED_LOW   0x0a0
#define QUEUE_USED_HIGH  0x0a4
#define CONFIG           0x100

#define S_ACKNOWLEDGE 1
#define S_DRIVER      2
#define S_DRIVER_OK   4
#define S_FEATURES_OK 8

#ifndef LEVEL
#define LEVEL 0                         /* 1: the I/O APIC pin level triggered */
#endif
#ifndef POLL
#define POLL 0                          /* 1: poll the used ring, the IRQ left masked */
#endif
#ifndef REQUESTS
#define REQUESTS 0                      /* 1: also flush, get id, a bad type, past the end */
#endif
#ifndef SECTORS_PAST_END
#define SECTORS_PAST_END 128
#endif
#ifndef DUMP
#define DUMP 0                          /* 1: print the registers of slots 0 and 7 */
#endif
#ifndef INDIRECT
#define INDIRECT 0                      /* 1: each request through an indirect table */
#endif
#ifndef EVENT_IDX
#define EVENT_IDX 0                     /* 1: negotiate it, then suppress an interrupt */
#endif
#ifndef LOOP
#define LOOP 0                          /* N: then N rounds of write, read back, "blk I ok" */
#endif
#ifndef FEATURES
#define FEATURES 0                      /* 1: print the feature bits and config space */
#endif
#define QSIZE 8
#define VIRTIO_VECTOR 0x25
#define VIRTQ_DESC_F_NEXT  1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_BLK_T_IN  0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QSIZE];
    uint16_t used_event;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct {
        uint32_t id;
        uint32_t len;
    } ring[QSIZE];
    uint16_t avail_event;
};

struct blk_req {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/* One page-aligned area holds the ring in the legacy layout (descriptors, the
 * available ring after them, the used ring on the next page); the modern
 * transport is given the same three addresses. */
static uint8_t ring[8192] __attribute__((aligned(4096)));
#define DESC  ((volatile struct virtq_desc *)ring)
#define AVAIL ((volatile struct virtq_avail *)(ring + QSIZE * sizeof(struct virtq_desc)))
#define USED  ((volatile struct virtq_used *)(ring + 4096))

static volatile struct virtq_desc indirect[3] __attribute__((aligned(16)));
static struct blk_req req;
static uint8_t buf[512] __attribute__((aligned(16)));
static volatile uint8_t req_status;
static uint32_t dev;
static uint16_t last_used;
static int poll_next;                   /* the next request is polled (EVENT_IDX=1) */
static volatile int irqs;               /* interrupts with InterruptStatus bit 0 */
static int empty_irqs;                  /* ... of them with no new used buffer */

static uint32_t rd(uint32_t reg) { return mmio_read32(dev + reg); }
static void wr(uint32_t reg, uint32_t v) { mmio_write32(dev + reg, v); }

void irq_handler(uint32_t vector)
{
    if (vector != VIRTIO_VECTOR) {
        puts("irq: unexpected vector ");
        puthex(vector, 2);
        putc('\n');
        return;
    }
    uint32_t isr = rd(INTERRUPT_STATUS);
    wr(INTERRUPT_ACK, isr);
    if (isr & 1)                        /* a used buffer */
        irqs++;
    lapic_eoi();
}

static void print_bytes(const uint8_t *p, int n)
{
    for (int i = 0; i < n; i++) {
        putc(' ');
        puthex(p[i], 2);
    }
    putc('\n');
}

/* One request: the header, data_len bytes of buf (none: no data descriptor), the
 * status byte.  The data is device-writable except for a write. */
static int transfer_len(uint32_t type, uint32_t sector, uint32_t data_len)
{
    req.type = type;
    req.reserved = 0;
    req.sector = sector;
    req_status = 0xff;
    /* the chain: descriptors 0-2 of the ring, or of a table that descriptor 3
     * points to (VIRTIO_RING_F_INDIRECT_DESC) */
    volatile struct virtq_desc *t = INDIRECT ? indirect : DESC;
    t[0].addr = (uint32_t)&req;
    t[0].len = sizeof(req);
    t[0].flags = VIRTQ_DESC_F_NEXT;
    t[0].next = data_len ? 1 : 2;
    t[1].addr = (uint32_t)buf;
    t[1].len = data_len;
    t[1].flags = VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE);
    t[1].next = 2;
    t[2].addr = (uint32_t)&req_status;
    t[2].len = 1;
    t[2].flags = VIRTQ_DESC_F_WRITE;
    t[2].next = 0;
    if (INDIRECT) {
        DESC[3].addr = (uint32_t)indirect;
        DESC[3].len = sizeof(indirect);
        DESC[3].flags = VIRTQ_DESC_F_INDIRECT;
        DESC[3].next = 0;
    }
    AVAIL->ring[AVAIL->idx % QSIZE] = INDIRECT ? 3 : 0;
    barrier();
    AVAIL->idx = AVAIL->idx + 1;
    barrier();
    if (EVENT_IDX && !poll_next)
        AVAIL->used_event = last_used;  /* interrupt for the next used buffer */
    barrier();
    int seen = irqs;
    wr(QUEUE_NOTIFY, 0);
    /* The device puts the buffer in the used ring, then interrupts.  Like Linux's
     * vring_interrupt, a used-buffer interrupt with nothing new in the ring is
     * passed over, but counted (QEMU sends none). */
    int polling = POLL || poll_next;
    while (polling && USED->idx == last_used)
        __asm__ volatile("pause" ::: "memory");
    while (!polling) {
        wait_for_change(&irqs, seen);
        seen = irqs;
        if (USED->idx != last_used)
            break;
        empty_irqs++;
    }
    last_used = USED->idx;
    uint32_t id = USED->ring[(last_used - 1) % QSIZE].id;
    uint32_t len = USED->ring[(last_used - 1) % QSIZE].len;
    if (type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_OUT) {
        puts(type == VIRTIO_BLK_T_IN ? "read" : "write");
        puts(" sector ");
        putdec(sector);
    } else {
        puts("request type ");
        putdec(type);
    }
    puts(": used id ");
    putdec(id);
    puts(" len ");
    putdec(len);
    puts(" status ");
    putdec(req_status);
    puts(polling ? ", by polling\n" : ", by interrupt\n");
    return req_status;
}

static int transfer(uint32_t type, uint32_t sector)
{
    return transfer_len(type, sector, sizeof(buf));
}

static int find_device(void)
{
    int found = -1;
    for (int i = 0; i < 8; i++) {
        uint32_t base = MMIO_BASE + 512 * (uint32_t)i;
        if (mmio_read32(base + MAGIC) != 0x74726976) {
            puts("slot ");
            putdec((uint32_t)i);
            puts(": no virtio-mmio magic\n");
            continue;
        }
        uint32_t id = mmio_read32(base + DEVICE_ID);
        if (id) {
            puts("slot ");
            putdec((uint32_t)i);
            puts(": device id ");
            putdec(id);
            putc('\n');
        }
        if (id == 2 && found < 0)
            found = i;
    }
    return found;
}

static int announced_irq(const char *cmdline, uint32_t base)
{
    const char *p = cmdline;
    while ((p = find(p, "virtio_mmio.device=")) != 0) {
        p += 19;
        parse_number(&p);               /* the size */
        if (*p++ != '@')
            continue;
        uint32_t addr = parse_number(&p);
        if (*p++ != ':')
            continue;
        uint32_t irq = parse_number(&p);
        if (addr == base)
            return (int)irq;
    }
    return -1;
}

static void setup_queue(uint32_t version)
{
    memset(ring, 0, sizeof(ring));
    wr(QUEUE_SEL, 0);
    uint32_t max = rd(QUEUE_NUM_MAX);
    puts("queue 0: ");
    puts(max >= QSIZE ? "size max at least 8" : "too small");
    putc('\n');
    if (max < QSIZE)
        debug_exit(4);
    wr(QUEUE_NUM, QSIZE);
    if (version == 1) {
        wr(GUEST_PAGE_SIZE, 4096);
        wr(QUEUE_ALIGN, 4096);
        wr(QUEUE_PFN, (uint32_t)ring >> 12);
    } else {
        wr(QUEUE_DESC_LOW, (uint32_t)DESC);
        wr(QUEUE_DESC_HIGH, 0);
        wr(QUEUE_AVAIL_LOW, (uint32_t)AVAIL);
        wr(QUEUE_AVAIL_HIGH, 0);
        wr(QUEUE_USED_LOW, (uint32_t)USED);
        wr(QUEUE_USED_HIGH, 0);
        wr(QUEUE_READY, 1);
    }
}

int main(const struct hvm_start_info *si)
{
    const char *cmdline = PHYS(const char *, si->cmdline_paddr);
    puts("virtio_blk: cmdline [");
    if (cmdline)
        puts(cmdline);
    puts("]\n");
    if (DUMP) {
        /* Every register word of the first transport and of the last (where
         * QEMU puts the first device), as the driver finds them. */
        for (uint32_t i = 0; i < 8; i += 7) {
            puts("registers of slot ");
            putdec(i);
            puts(":");
            for (uint32_t off = 0; off < 0x100; off += 4) {
                putc(off % 32 ? ' ' : '\n');
                puthex(mmio_read32(MMIO_BASE + 512 * i + off), 8);
            }
            putc('\n');
        }
    }
    int slot = find_device();
    if (slot < 0) {
        puts("no virtio-blk device\n");
        debug_exit(2);
    }
    dev = MMIO_BASE + 512 * (uint32_t)slot;
    uint32_t version = rd(VERSION);
    int irq = announced_irq(cmdline, dev);
    puts("virtio-blk in slot ");
    putdec((uint32_t)slot);
    puts(" at 0x");
    puthex(dev, 8);
    puts(", transport version ");
    putdec(version);
    puts(", vendor 0x");
    puthex(rd(0x00c), 8);
    puts(", irq ");
    if (irq < 0)
        puts("not announced\n");
    else {
        putdec((uint32_t)irq);
        putc('\n');
    }
    if (irq < 0 || (version != 1 && version != 2))
        debug_exit(2);

    idt_init();
    idt_set(VIRTIO_VECTOR, irq_stub_0x25);
    pic_mask_all();
    lapic_enable();
    if (!POLL)
        ioapic_route(irq, VIRTIO_VECTOR, 0, LEVEL);

    wr(STATUS, 0);
    puts("status after reset ");
    putdec(rd(STATUS));
    putc('\n');
    wr(STATUS, S_ACKNOWLEDGE);
    wr(STATUS, S_ACKNOWLEDGE | S_DRIVER);
    wr(DEVICE_FEATURES_SEL, 0);
    uint32_t f0 = rd(DEVICE_FEATURES);
    wr(DEVICE_FEATURES_SEL, 1);
    uint32_t f1 = rd(DEVICE_FEATURES);
    if (FEATURES) {
        puts("device features 0x");
        puthex(f1, 8);
        puthex(f0, 8);
        putc('\n');
        puts("config space:");          /* struct virtio_blk_config, 60 bytes */
        for (uint32_t off = 0; off < 60; off += 4) {
            putc(off % 32 ? ' ' : '\n');
            puthex(rd(CONFIG + off), 8);
        }
        putc('\n');
    }
    wr(DRIVER_FEATURES_SEL, 0);
    if (INDIRECT && !(f0 & (1u << VIRTIO_RING_F_INDIRECT_DESC))) {
        puts("no VIRTIO_RING_F_INDIRECT_DESC\n");
        debug_exit(5);
    }
    if (EVENT_IDX && !(f0 & (1u << VIRTIO_RING_F_EVENT_IDX))) {
        puts("no VIRTIO_RING_F_EVENT_IDX\n");
        debug_exit(5);
    }
    wr(DRIVER_FEATURES, (INDIRECT ? 1u << VIRTIO_RING_F_INDIRECT_DESC : 0) |
                        (EVENT_IDX ? 1u << VIRTIO_RING_F_EVENT_IDX : 0));
    wr(DRIVER_FEATURES_SEL, 1);
    wr(DRIVER_FEATURES, version == 2 ? 1 : 0);      /* VIRTIO_F_VERSION_1 is bit 32 */
    if (version == 2) {
        if (!(f1 & 1)) {
            puts("modern transport without VIRTIO_F_VERSION_1\n");
            debug_exit(5);
        }
        wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        uint32_t st = rd(STATUS);
        puts("features ");
        puts(st & S_FEATURES_OK ? "accepted" : "refused");
        putc('\n');
        if (!(st & S_FEATURES_OK))
            debug_exit(5);
    }
    setup_queue(version);
    wr(STATUS, rd(STATUS) | S_DRIVER_OK);
    puts("status ");
    putdec(rd(STATUS));
    putc('\n');

    uint32_t lo = rd(CONFIG), hi = rd(CONFIG + 4);
    puts("capacity ");
    putdec(lo);
    puts(" sectors");
    if (hi)
        puts(" (and more)");
    putc('\n');

    for (uint32_t sector = 0; sector < 2; sector++) {
        memset(buf, 0, sizeof(buf));
        if (transfer(VIRTIO_BLK_T_IN, sector) == 0) {
            puts("sector ");
            putdec(sector);
            puts(":");
            print_bytes(buf, 16);
        }
    }
    for (int i = 0; i < 512; i++)
        buf[i] = (uint8_t)(i * 7 + 0x5a);
    transfer(VIRTIO_BLK_T_OUT, 2);
    memset(buf, 0, sizeof(buf));
    if (transfer(VIRTIO_BLK_T_IN, 2) == 0) {
        int same = 1;
        for (int i = 0; i < 512; i++)
            same &= buf[i] == (uint8_t)(i * 7 + 0x5a);
        puts("sector 2:");
        print_bytes(buf, 16);
        puts(same ? "sector 2 reads back as written\n" : "sector 2 differs\n");
    }
    for (int i = 0; i < LOOP; i++) {        /* (migrated meanwhile by the tests) */
        uint32_t sector = 3 + i % 64;
        for (int j = 0; j < 512; j++)
            buf[j] = (uint8_t)(i + j);
        transfer(VIRTIO_BLK_T_OUT, sector);
        memset(buf, 0, sizeof(buf));
        int same = transfer(VIRTIO_BLK_T_IN, sector) == 0;
        for (int j = 0; j < 512; j++)
            same &= buf[j] == (uint8_t)(i + j);
        for (volatile uint32_t d = 0; d < 20000; d++)
            ;
        puts("blk ");
        putdec(i);
        puts(same ? " ok\n" : " differs\n");
    }
    if (EVENT_IDX) {
        /* used_event one past the next buffer: no interrupt for it (polled),
         * one for the buffer after it */
        int before = irqs;
        AVAIL->used_event = (uint16_t)(last_used + 1);
        poll_next = 1;
        transfer(VIRTIO_BLK_T_IN, 0);
        poll_next = 0;
        AVAIL->used_event = (uint16_t)(last_used);
        transfer(VIRTIO_BLK_T_IN, 1);
        puts("event index: ");
        putdec((uint32_t)(irqs - before));
        puts(" interrupt for 2 buffers\n");
    }
    if (REQUESTS) {
        transfer_len(VIRTIO_BLK_T_FLUSH, 0, 0);
        memset(buf, 0, sizeof(buf));
        if (transfer_len(VIRTIO_BLK_T_GET_ID, 0, 20) == 0) {
            puts("id [");
            for (int i = 0; i < 20 && buf[i]; i++)
                putc(buf[i] >= 0x20 && buf[i] < 0x7f ? (char)buf[i] : '?');
            puts("]\n");
        }
        transfer_len(0x99, 0, 512);                 /* no such request */
        transfer(VIRTIO_BLK_T_IN, SECTORS_PAST_END);  /* past the end */
    }
    puts("used-buffer interrupts ");
    putdec((uint32_t)irqs);
    puts(", with nothing new in the used ring ");
    putdec((uint32_t)empty_irqs);
    puts("\nbye\n");
    debug_exit(0x22);
}
