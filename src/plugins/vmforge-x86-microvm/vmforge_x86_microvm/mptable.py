"""The Intel MP table (MultiProcessor Specification 1.4) that announces the vCPUs,
the I/O APIC and the interrupt routing to a guest without ACPI.

Layouts from the MP spec 1.4 (chapter 4) as Linux declares them in
arch/x86/include/asm/mpspec_def.h, all little endian and packed:

``mpf_intel`` (the floating pointer, 16 bytes): 0 "_MP_", 4 physptr (u32),
8 length in 16-byte paragraphs (1), 9 spec rev (4), 10 checksum, 11..15 features.

``mpc_table`` (the configuration table header, 44 bytes): 0 "PCMP", 4 length (u16,
header and entries), 6 spec rev, 7 checksum, 8 OEM ID [8], 16 product ID [12],
28 OEM table pointer (u32), 32 OEM table size (u16), 34 entry count (u16),
36 local APIC address (u32), 40 extended table length (u16), 42 extended checksum,
43 reserved.  Then the entries: processor (type 0, 20 bytes), bus (1, 8), I/O APIC
(2, 8), I/O interrupt (3, 8), local interrupt (4, 8).

The table is the one QEMU 7.2's microvm (``acpi=off``) hands its guests, which its
firmware qboot builds (qboot's mptable.c, the same shape as Firecracker's
arch/x86_64/mptable.rs): the floating pointer at the start of the EBDA (0x9fc00)
with the table right after it, OEM "QBOOT   ", product "000000000000", the entry
count left 0 (Linux walks the table by its length; so do qboot and Firecracker),
the processors with APIC IDs 0..n-1 (the first the BSP), one ISA bus, the I/O
APIC with ID n + 1, ISA IRQ i on I/O APIC pin i except IRQ 0 on pin 2 (QEMU's
"IRQ0 override": its KVM routing sends GSI 0 to pin 2) with no entry for IRQ 2,
ExtINT on every LAPIC's LINT0 and NMI on every LAPIC's LINT1.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["EBDA_SIZE", "MP_BUS", "MP_INTSRC", "MP_IOAPIC", "MP_LINTSRC", "MP_PROCESSOR",
           "build_mptable", "mptable_size"]

EBDA_SIZE = 1024                    #: 0x9fc00..0xa0000, where the table must fit
MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC = 0, 1, 2, 3, 4
CPU_ENABLED, CPU_BOOTPROCESSOR = 1, 2
MPC_APIC_USABLE = 1
MP_INT, MP_NMI, MP_EXTINT = 0, 1, 3          # enum mp_irq_source_types
MP_IRQPOL_DEFAULT = 0                        # conforms to the bus (ISA: edge, high)
MP_APIC_ALL = 0xFF
APIC_VERSION = 0x14                          # qboot's and Firecracker's
MPC_SPEC = 4                                 # MP spec 1.4
#: Firecracker's processor signature (family 6) and feature flags (FPU | APIC);
#: qboot copies the BSP's CPUID.1 EAX/EDX, which Linux only prints
CPU_SIGNATURE = 0x600
CPU_FEATURES = 0x201

_MPF = struct.Struct("<4sIBBBBBBBB")         # 16
_MPC = struct.Struct("<4sHBB8s12sIHHIHBB")   # 44
_CPU = struct.Struct("<BBBBIIII")            # 20
_BUS = struct.Struct("<BB6s")                # 8
_IOAPIC = struct.Struct("<BBBBI")            # 8
_INTSRC = struct.Struct("<BBHBBBB")          # 8 (mpc_intsrc and mpc_lintsrc)


def _checksum(data: bytes | bytearray) -> int:
    """The byte that makes ``data`` (with a 0 in its checksum field) sum to 0 mod 256."""
    return -sum(data) & 0xFF


def _io_irqs(isa_irqs: int, extra_irqs: Sequence[int], irq0_override: bool) -> list[tuple[int,
                                                                                         int]]:
    """(source bus IRQ, I/O APIC pin) of every I/O interrupt entry."""
    routes = []
    for irq in [*range(isa_irqs), *extra_irqs]:
        if irq0_override and irq == 2:
            continue                         # pin 2 carries IRQ 0
        routes.append((irq, 2 if irq0_override and irq == 0 else irq))
    return routes


def mptable_size(ncpus: int, *, isa_irqs: int = 16, extra_irqs: Sequence[int] = (),
                 irq0_override: bool = True) -> int:
    """Bytes :func:`build_mptable` returns for these arguments."""
    return (_MPF.size + _MPC.size + _CPU.size * ncpus + _BUS.size + _IOAPIC.size
            + _INTSRC.size * (len(_io_irqs(isa_irqs, extra_irqs, irq0_override)) + 2))


def build_mptable(ncpus: int, *, base: int = 0x9FC00, ioapic_id: int | None = None,
                  ioapic_addr: int = 0xFEC00000, apic_addr: int = 0xFEE00000,
                  isa_irqs: int = 16, extra_irqs: Sequence[int] = (),
                  irq0_override: bool = True, oem: bytes = b"QBOOT   ",
                  product: bytes = b"000000000000", cpu_signature: int = CPU_SIGNATURE,
                  cpu_features: int = CPU_FEATURES) -> bytes:
    """The floating pointer followed by the configuration table, to be written at
    ``base`` (the pointer's ``physptr`` is ``base + 16``).  ``ioapic_id`` defaults
    to ``ncpus + 1`` as QEMU's; ``extra_irqs`` (e.g. 16..23) are routed to the pin
    of their number on the ISA bus, as Firecracker announces them;
    ``irq0_override`` routes IRQ 0 to pin 2 and drops IRQ 2, which is right only
    when the machine's GSI routing does the same (QEMU's does)."""
    if not 1 <= ncpus <= 254:
        raise ValueError(f"{ncpus} vCPUs: an MP table announces 1 to 254 (8-bit APIC IDs, "
                         "one left for the I/O APIC)")
    ioapic = ncpus + 1 if ioapic_id is None else ioapic_id
    if not ncpus <= ioapic <= 0xFE:
        raise ValueError(f"I/O APIC ID {ioapic} must be above the vCPUs' APIC IDs "
                         f"(0..{ncpus - 1}) and below 255")
    irqs = [*range(isa_irqs), *extra_irqs]
    if not 0 <= isa_irqs <= 16 or len(set(irqs)) != len(irqs) or \
            any(not 0 <= i <= 0xFF for i in irqs):
        raise ValueError(f"IRQs {irqs}: ISA has at most 16, each must be 0..255 and appear once")
    if len(oem) != 8 or len(product) != 12:
        raise ValueError("the OEM ID has 8 bytes and the product ID 12")
    size = mptable_size(ncpus, isa_irqs=isa_irqs, extra_irqs=extra_irqs,
                        irq0_override=irq0_override)
    if size > EBDA_SIZE:
        raise ValueError(f"the MP table for {ncpus} vCPUs takes {size} bytes, more than the "
                         f"{EBDA_SIZE} of the EBDA")
    if not 0 <= base <= (1 << 32) - size or base % 16:
        raise ValueError(f"the MP table at {base:#x} must be 16-byte aligned below 4 GiB")

    entries = bytearray()
    for cpu in range(ncpus):
        flags = CPU_ENABLED | (CPU_BOOTPROCESSOR if cpu == 0 else 0)
        entries += _CPU.pack(MP_PROCESSOR, cpu, APIC_VERSION, flags, cpu_signature,
                             cpu_features, 0, 0)
    entries += _BUS.pack(MP_BUS, 0, b"ISA   ")
    entries += _IOAPIC.pack(MP_IOAPIC, ioapic, APIC_VERSION, MPC_APIC_USABLE, ioapic_addr)
    for irq, pin in _io_irqs(isa_irqs, extra_irqs, irq0_override):
        entries += _INTSRC.pack(MP_INTSRC, MP_INT, MP_IRQPOL_DEFAULT, 0, irq, ioapic, pin)
    entries += _INTSRC.pack(MP_LINTSRC, MP_EXTINT, MP_IRQPOL_DEFAULT, 0, 0, 0, 0)
    entries += _INTSRC.pack(MP_LINTSRC, MP_NMI, MP_IRQPOL_DEFAULT, 0, 0, MP_APIC_ALL, 1)

    table = bytearray(_MPC.pack(b"PCMP", _MPC.size + len(entries), MPC_SPEC, 0, oem, product,
                                0, 0, 0, apic_addr, 0, 0, 0)) + entries
    table[7] = _checksum(table)
    mpf = bytearray(_MPF.pack(b"_MP_", base + _MPF.size, 1, MPC_SPEC, 0, 0, 0, 0, 0, 0))
    mpf[10] = _checksum(mpf)
    out = bytes(mpf + table)
    assert len(out) == size
    return out
