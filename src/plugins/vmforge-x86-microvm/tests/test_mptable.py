"""The MP table: every field read back at the MP spec 1.4 offsets, walked by a C
program built on Linux's mpspec_def.h structures the way Linux's mpparse.c checks
it, and compared byte for byte with the table QEMU 7.2's microvm gives a guest."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from vmforge.testing.oracles import require_program
from vmforge.testing.x86_elf import build_elf, pvh_source
from vmforge_x86_microvm.mptable import EBDA_SIZE, build_mptable, mptable_size

BASE = 0x9FC00


def parse(raw: bytes, base: int = BASE) -> dict:
    """The table read back at the spec's offsets (MP spec 1.4 tables 4-1, 4-2, 4-3..4-7)."""
    assert raw[0:4] == b"_MP_"
    physptr, length, spec, _cks, f1, f2, f3, f4, f5 = struct.unpack_from("<IBBBBBBBB", raw, 4)
    assert sum(raw[:16]) % 256 == 0                         # floating pointer checksum
    assert (length, spec, f1, f2, f3, f4, f5) == (1, 4, 0, 0, 0, 0, 0)
    t = physptr - base
    assert raw[t:t + 4] == b"PCMP"
    (tlen, tspec, _tcks, oem, product, oemptr, oemsize, count, lapic, extlen,
     extcks, _res) = struct.unpack_from("<HBB8s12sIHHIHBB", raw, t + 4)
    assert sum(raw[t:t + tlen]) % 256 == 0                  # base table checksum
    assert len(raw) == t + tlen
    out = {"physptr": physptr, "spec": tspec, "oem": oem, "product": product,
           "oem_table": (oemptr, oemsize), "count": count, "lapic": lapic,
           "ext": (extlen, extcks), "cpus": [], "buses": [], "ioapics": [], "io": [],
           "local": []}
    e = t + 44
    while e < t + tlen:
        kind = raw[e]
        if kind == 0:
            _k, apicid, ver, flags, sig, feat, r0, r1 = struct.unpack_from("<BBBBIIII", raw, e)
            assert (r0, r1) == (0, 0)
            out["cpus"].append((apicid, ver, flags, sig, feat))
            e += 20
            continue
        if kind == 1:
            out["buses"].append((raw[e + 1], raw[e + 2:e + 8]))
        elif kind == 2:
            out["ioapics"].append(struct.unpack_from("<BBBI", raw, e + 1))
        elif kind in (3, 4):
            out["io" if kind == 3 else "local"].append(struct.unpack_from("<BHBBBB", raw, e + 1))
        else:
            raise AssertionError(f"entry type {kind}")
        e += 8
    assert e == t + tlen
    return out


@pytest.mark.parametrize("ncpus", [1, 2, 4, 32])
def test_fields(ncpus: int) -> None:
    raw = build_mptable(ncpus)
    assert len(raw) == mptable_size(ncpus) == 16 + 44 + 20 * ncpus + 8 + 8 + 8 * 15 + 16
    t = parse(raw)
    assert t["physptr"] == BASE + 16 and t["spec"] == 4 and t["lapic"] == 0xFEE00000
    assert (t["oem"], t["product"]) == (b"QBOOT   ", b"000000000000")
    assert t["oem_table"] == (0, 0) and t["count"] == 0 and t["ext"] == (0, 0)
    assert t["cpus"] == [(i, 0x14, 3 if i == 0 else 1, 0x600, 0x201) for i in range(ncpus)]
    assert t["buses"] == [(0, b"ISA   ")]
    assert t["ioapics"] == [(ncpus + 1, 0x14, 1, 0xFEC00000)]
    # IRQ 0 on pin 2, no IRQ 2; every other ISA IRQ on its own pin; bus 0, default flags
    pins = [(0, 2), *((i, i) for i in range(1, 16) if i != 2)]
    assert t["io"] == [(0, 0, 0, irq, ncpus + 1, pin) for irq, pin in pins]
    assert t["local"] == [(3, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0xFF, 1)]   # ExtINT LINT0, NMI LINT1


def test_options() -> None:
    raw = build_mptable(2, base=0xF0000, ioapic_id=2, ioapic_addr=0xFEC01000,
                        apic_addr=0xFEE01000, extra_irqs=range(16, 24), irq0_override=False,
                        oem=b"VMFORGE ", product=b"MICROVM     ", cpu_signature=0x806EC,
                        cpu_features=0x178BFBFF)
    t = parse(raw, base=0xF0000)
    assert t["physptr"] == 0xF0010 and t["lapic"] == 0xFEE01000
    assert t["ioapics"] == [(2, 0x14, 1, 0xFEC01000)]
    assert t["io"] == [(0, 0, 0, i, 2, i) for i in range(24)]        # Firecracker's 0..23
    assert (t["oem"], t["product"]) == (b"VMFORGE ", b"MICROVM     ")
    assert t["cpus"][1] == (1, 0x14, 1, 0x806EC, 0x178BFBFF)
    assert len(build_mptable(1, isa_irqs=0)) == 16 + 44 + 20 + 8 + 8 + 16


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ncpus": 0}, "0 vCPUs: an MP table announces 1 to 254"),
    ({"ncpus": 255}, "255 vCPUs"),
    ({"ncpus": 41}, "the MP table for 41 vCPUs takes 1032 bytes, more than the 1024"),
    ({"ncpus": 4, "ioapic_id": 3}, "I/O APIC ID 3 must be above the vCPUs' APIC IDs"),
    ({"ncpus": 1, "extra_irqs": [5]}, "appear once"),
    ({"ncpus": 1, "isa_irqs": 17}, "ISA has at most 16"),
    ({"ncpus": 1, "oem": b"X"}, "the OEM ID has 8 bytes"),
    ({"ncpus": 1, "base": 0x9FC08}, "16-byte aligned"),
])
def test_refusals(kwargs: dict, message: str) -> None:
    n = kwargs.pop("ncpus")
    with pytest.raises(ValueError, match=message):
        build_mptable(n, **kwargs)
    assert mptable_size(40) <= EBDA_SIZE


#: the structures of arch/x86/include/asm/mpspec_def.h (Linux 6.1), and the checks of
#: arch/x86/kernel/mpparse.c: smp_scan_config (signature, length 1, checksum over 16
#: bytes, spec 1 or 4), smp_check_mpc (signature, checksum over length, spec, lapic)
#: and smp_read_mpc's walk (entry sizes by sizeof, nothing past the length)
C_WALKER = r"""
#include <stdio.h>
#include <string.h>

struct mpf_intel {
    char signature[4]; unsigned int physptr; unsigned char length;
    unsigned char specification; unsigned char checksum; unsigned char feature1;
    unsigned char feature2; unsigned char feature3; unsigned char feature4;
    unsigned char feature5;
};
struct mpc_table {
    char signature[4]; unsigned short length; char spec; char checksum; char oem[8];
    char productid[12]; unsigned int oemptr; unsigned short oemsize;
    unsigned short oemcount; unsigned int lapic; unsigned int reserved;
};
struct mpc_cpu {
    unsigned char type; unsigned char apicid; unsigned char apicver;
    unsigned char cpuflag; unsigned int cpufeature; unsigned int featureflag;
    unsigned int reserved[2];
};
struct mpc_bus { unsigned char type; unsigned char busid; unsigned char bustype[6]; };
struct mpc_ioapic {
    unsigned char type; unsigned char apicid; unsigned char apicver; unsigned char flags;
    unsigned int apicaddr;
};
struct mpc_intsrc {
    unsigned char type; unsigned char irqtype; unsigned short irqflag;
    unsigned char srcbus; unsigned char srcbusirq; unsigned char dstapic;
    unsigned char dstirq;
};
struct mpc_lintsrc {
    unsigned char type; unsigned char irqtype; unsigned short irqflag;
    unsigned char srcbusid; unsigned char srcbusirq; unsigned char destapic;
    unsigned char destapiclint;
};

static int mpf_checksum(unsigned char *mp, int len)
{
    int sum = 0;
    while (len--)
        sum += *mp++;
    return sum & 0xFF;
}

static unsigned char mem[1 << 20];

int main(int argc, char **argv)
{
    unsigned long base = 0x9fc00;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fread(mem + base, 1, 1024, f);
    struct mpf_intel *mpf = (struct mpf_intel *)(mem + base);
    if (memcmp(mpf->signature, "_MP_", 4) || mpf->length != 1 ||
        mpf_checksum((unsigned char *)mpf, 16) ||
        (mpf->specification != 1 && mpf->specification != 4)) return 3;
    struct mpc_table *mpc = (struct mpc_table *)(mem + mpf->physptr);
    if (memcmp(mpc->signature, "PCMP", 4) ||
        mpf_checksum((unsigned char *)mpc, mpc->length) ||
        (mpc->spec != 1 && mpc->spec != 4) || !mpc->lapic) return 4;
    printf("sizes %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct mpf_intel),
           sizeof(struct mpc_table), sizeof(struct mpc_cpu), sizeof(struct mpc_bus),
           sizeof(struct mpc_ioapic), sizeof(struct mpc_intsrc), sizeof(struct mpc_lintsrc));
    printf("lapic %#x oem %.8s\n", mpc->lapic, mpc->oem);
    int count = sizeof(*mpc);
    unsigned char *mpt = (unsigned char *)mpc + count;
    while (count < mpc->length) {
        switch (*mpt) {
        case 0: {
            struct mpc_cpu *m = (struct mpc_cpu *)mpt;
            printf("cpu %u flags %u\n", m->apicid, m->cpuflag);
            mpt += sizeof(*m); count += sizeof(*m); break; }
        case 1: {
            struct mpc_bus *m = (struct mpc_bus *)mpt;
            printf("bus %u %.6s\n", m->busid, m->bustype);
            mpt += sizeof(*m); count += sizeof(*m); break; }
        case 2: {
            struct mpc_ioapic *m = (struct mpc_ioapic *)mpt;
            printf("ioapic %u %#x\n", m->apicid, m->apicaddr);
            mpt += sizeof(*m); count += sizeof(*m); break; }
        case 3: {
            struct mpc_intsrc *m = (struct mpc_intsrc *)mpt;
            printf("int %u %u %u -> %u %u\n", m->irqtype, m->srcbus, m->srcbusirq,
                   m->dstapic, m->dstirq);
            mpt += sizeof(*m); count += sizeof(*m); break; }
        case 4: {
            struct mpc_lintsrc *m = (struct mpc_lintsrc *)mpt;
            printf("lint %u -> %u %u\n", m->irqtype, m->destapic, m->destapiclint);
            mpt += sizeof(*m); count += sizeof(*m); break; }
        default:
            return 5;
        }
    }
    return count == mpc->length ? 0 : 6;
}
"""


def test_walked_as_linux_does(tmp_path: Path) -> None:
    gcc = require_program("gcc", "gcc")
    (tmp_path / "walk.c").write_text(C_WALKER)
    subprocess.run([gcc, "-O0", "-o", str(tmp_path / "walk"), str(tmp_path / "walk.c")],
                   check=True)
    table = tmp_path / "mptable.bin"
    table.write_bytes(build_mptable(2))
    proc = subprocess.run([str(tmp_path / "walk"), str(table)], capture_output=True, text=True)
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert lines[0] == "sizes 16 44 20 8 8 8 8"
    assert lines[1] == "lapic 0xfee00000 oem QBOOT   "
    assert lines[2:7] == ["cpu 0 flags 3", "cpu 1 flags 1", "bus 0 ISA   ",
                          "ioapic 3 0xfec00000", "int 0 0 0 -> 3 2"]
    assert len([x for x in lines if x.startswith("int ")]) == 15
    assert lines[-2:] == ["lint 3 -> 0 0", "lint 1 -> 255 1"]


#: a PVH guest printing the EBDA (1 KiB at 0x9fc00) in hex on the UART, then exiting
DUMP_GUEST = """
    .text
    .code32
    .globl _start
_start:
    mov     $0x8000, %esp
    mov     $0x9fc00, %esi
    mov     $1024, %ecx
1:  movzbl  (%esi), %ebx
    mov     %ebx, %eax
    shr     $4, %eax
    call    hex
    mov     %ebx, %eax
    call    hex
    inc     %esi
    dec     %ecx
    jnz     1b
    mov     $0x0a, %al
    mov     $0x3f8, %dx
    out     %al, %dx
    mov     $0, %al
    out     %al, $0xf4
    hlt
hex:
    and     $0xf, %eax
    cmp     $10, %al
    jb      2f
    add     $0x27, %al
2:  add     $0x30, %al
    mov     $0x3f8, %dx
    out     %al, %dx
    ret
"""


@pytest.mark.parametrize("ncpus", [1, 3])
def test_same_bytes_as_qemu_microvm(tmp_path: Path, ncpus: int) -> None:
    qemu = require_program("qemu-system-x86_64", "qemu-system-x86")
    elf = build_elf(tmp_path, pvh_source(".long _start", body=DUMP_GUEST), bits=32,
                    name="dump")
    # TCG: the table does not depend on the accelerator (qboot builds it; QEMU's
    # FW_CFG_IRQ0_OVERRIDE is set with TCG as with KVM's irqchip)
    proc = subprocess.run([qemu, "-M", "microvm,acpi=off", "-accel", "tcg", "-m", "64M",
                           "-smp", str(ncpus), "-nodefaults", "-no-user-config",
                           "-display", "none", "-serial", "stdio", "-no-reboot",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                           "-kernel", str(elf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc
    ebda = bytes.fromhex(proc.stdout.strip())
    assert len(ebda) == 1024
    # qboot copies the BSP's CPUID.1 EAX/EDX into the processor entries: take those
    cpu_signature, cpu_features = struct.unpack_from("<II", ebda, 16 + 44 + 4)
    ours = build_mptable(ncpus, cpu_signature=cpu_signature, cpu_features=cpu_features)
    assert ebda[:len(ours)] == ours
    assert ebda[len(ours):] == bytes(1024 - len(ours))
