"""The CPU a KVM guest is shown: QEMU's default x86-64 model (``qemu64``) or the
host's (``host``), as CPUID entries for ``KVM_SET_CPUID2``.

``qemu64`` follows QEMU 7.2's definition (``target/i386/cpu.c``: the host's
vendor, as QEMU sets it on KVM; family 15, model 107, stepping 1, basic leaves up to 0xd,
extended up to 0x8000000a, the brand string "QEMU Virtual CPU version 2.5+",
SSE3 and CX16 in leaf 1 ECX, LM/SYSCALL/NX and LAHF_LM in leaf 0x80000001)
with the features QEMU adds on KVM (x2APIC, the hypervisor bit, KVM's
paravirtual leaf with QEMU's default set: clocksource, nopiodelay, mmu-op,
clocksource2, async-pf, steal-time, pv-eoi, clocksource-stable), each bit only
where KVM supports it.  Leaves the model does not define (7 sub-leaf 0, 0xd:
extended state) are what KVM supports, as QEMU passes them for the features it
enables; leaf 7's other sub-leaves are absent (qemu64 enables none of their
features; a guest reads zeros).  On a host that is not AMD's, leaves 2 and 4
describe QEMU's legacy caches (an AMD vendor gets them empty, QEMU's
``vendor_cpuid_only``); 0x80000008 gives the host's physical address width and
48 linear address bits (qemu64 has no LA57).
A guest kernel sees the same CPU under vmforge and under QEMU's default
``-cpu``, so it takes the same paths (and prints the same lines).

``host`` is everything ``KVM_GET_SUPPORTED_CPUID`` offers (QEMU's ``-cpu host``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vmforge.accel.kvm.state import CpuidEntry

__all__ = ["CPU_MODELS", "cpuid_for"]

CPU_MODELS = ("qemu64", "host")

_AMD = (0x68747541, 0x69746E65, 0x444D4163)        # "AuthenticAMD" as ebx, edx, ecx
_BRAND = b"QEMU Virtual CPU version 2.5+".ljust(48, b"\0")
# family 15, model 107 (ext model 6, model 0xb), stepping 1
_SIGNATURE = 0x00060FB1
# leaf 1 EDX: PPRO_FEATURES | MTRR | CLFLUSH | MCA | PSE36 (QEMU's qemu64)
_L1_EDX = 0x078BFBFD | (1 << 12) | (1 << 19) | (1 << 14) | (1 << 17)
# leaf 1 ECX: SSE3, CX16; on KVM: x2APIC, hypervisor
_L1_ECX = (1 << 0) | (1 << 13) | (1 << 21) | (1 << 31)
# 0x80000001 EDX: the leaf-1 bits AMD repeats, SYSCALL, NX, LM; ECX: LAHF_LM
_X1_EDX = (_L1_EDX & 0x0183F3FF) | (1 << 11) | (1 << 20) | (1 << 29)
_X1_ECX = 1 << 0
# KVM's leaf 0x40000001 EAX: QEMU's default kvm features (msi-ext-dest-id: below)
_KVM_FEATURES = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) \
    | (1 << 15) | (1 << 24)
# QEMU's fake cache descriptions (AMD leaves 0x80000005/6)
_L1_CACHES = (0x01FF01FF, 0x01FF01FF, 0x40020140, 0x40020140)
_L2_CACHES = (0x00000000, 0x42004200, 0x02008140, 0x00808140)
# ... and its legacy caches as leaf 2 descriptors (L1d 0x2c, L1i 0x30, L2 0x7d; L3
# 0x4d) and as leaf 4 sub-leaves (type, level, self-init | 8 or 16 ways of 64-byte
# lines | sets - 1 | no-invd-sharing, inclusive, complex indexing): 32 KiB L1d and
# L1i, 4 MiB L2, 16 MiB L3
_CPUID2 = (0x00000001, 0x00000000, 0x0000004D, 0x002C307D)
_CPUID4 = ((0x121, 0x01C0003F, 0x0000003F, 1), (0x122, 0x01C0003F, 0x0000003F, 1),
           (0x143, 0x03C0003F, 0x00000FFF, 1), (0x163, 0x03C0003F, 0x00003FFF, 6))


def _entry(function: int, index: int = 0, flags: int = 0, eax: int = 0, ebx: int = 0,
           ecx: int = 0, edx: int = 0) -> CpuidEntry:
    return CpuidEntry(function=function, index=index, flags=flags, eax=eax, ebx=ebx,
                      ecx=ecx, edx=edx)


def _qemu64(supported: Sequence[CpuidEntry], index: int, count: int) -> list[CpuidEntry]:
    have = {(e.function, e.index): e for e in supported}

    def sup(fn: int, reg: str) -> int:
        e = have.get((fn, 0))
        return int(getattr(e, reg)) if e is not None else 0

    brand = [int.from_bytes(_BRAND[i:i + 4], "little") for i in range(0, 48, 4)]
    vendor = (sup(0, "ebx"), sup(0, "edx"), sup(0, "ecx")) if (0, 0) in have else _AMD
    out = [
        _entry(0, eax=0xD, ebx=vendor[0], edx=vendor[1], ecx=vendor[2]),
        _entry(1, eax=_SIGNATURE,
               ebx=(index << 24) | ((count if count > 1 else 0) << 16) | (8 << 8),
               ecx=_L1_ECX & sup(1, "ecx"),
               edx=(_L1_EDX | (1 << 28 if count > 1 else 0)) & (sup(1, "edx") | 1 << 28)),
        _entry(5, ecx=3),                                # MONITOR leaf as QEMU fills it
    ]
    amd = vendor == _AMD
    out.append(_entry(2) if amd else _entry(2, eax=_CPUID2[0], ebx=_CPUID2[1],
                                              ecx=_CPUID2[2], edx=_CPUID2[3]))
    for sub in range(len(_CPUID4) + 1):                  # (the last one: no more caches)
        regs = (0, 0, 0, 0) if amd or sub == len(_CPUID4) else _CPUID4[sub]
        out.append(_entry(4, sub, flags=1, eax=regs[0], ebx=regs[1], ecx=regs[2],
                          edx=regs[3]))
    for e in supported:                                  # what KVM enables, as QEMU
        if e.function == 0xD or (e.function == 7 and e.index == 0):
            out.append(e)
    for level in range(4):                               # x2APIC topology, one thread
        kind = (1 if level == 0 else 2 if level == 1 else 0) << 8
        out.append(_entry(0xB, level, flags=1, eax=0, ebx=1 if level < 2 else 0,
                          ecx=kind | level, edx=index))
    out += [
        _entry(0x40000000, eax=0x40000001, ebx=0x4B4D564B, ecx=0x564B4D56, edx=0x4D),
        # MSI extended destination ids: QEMU offers it whatever KVM reports (the
        # VMM, not KVM, decides how MSI addresses are decoded)
        _entry(0x40000001, eax=(_KVM_FEATURES & sup(0x40000001, "eax")) | 1 << 15),
        _entry(0x80000000, eax=0x8000000A, ebx=vendor[0], edx=vendor[1], ecx=vendor[2]),
        _entry(0x80000001, eax=_SIGNATURE, ecx=_X1_ECX & sup(0x80000001, "ecx"),
               edx=_X1_EDX & sup(0x80000001, "edx")),
        _entry(0x80000002, eax=brand[0], ebx=brand[1], ecx=brand[2], edx=brand[3]),
        _entry(0x80000003, eax=brand[4], ebx=brand[5], ecx=brand[6], edx=brand[7]),
        _entry(0x80000004, eax=brand[8], ebx=brand[9], ecx=brand[10], edx=brand[11]),
        _entry(0x80000005, eax=_L1_CACHES[0], ebx=_L1_CACHES[1], ecx=_L1_CACHES[2],
               edx=_L1_CACHES[3]),
        _entry(0x80000006, eax=_L2_CACHES[0], ebx=_L2_CACHES[1], ecx=_L2_CACHES[2],
               edx=_L2_CACHES[3]),
        # physical address bits as the host's; linear 48 (qemu64 has no LA57)
        _entry(0x80000008, eax=(sup(0x80000008, "eax") & 0xFF) | 48 << 8),
    ]
    return out


def _host(supported: Sequence[CpuidEntry], index: int, count: int) -> list[CpuidEntry]:
    out = []
    for e in supported:
        if e.function == 1:
            e = dataclasses.replace(
                e, ebx=(e.ebx & 0xFFFF) | (index << 24) | (count << 16),
                edx=e.edx | (1 << 28 if count > 1 else 0))
        elif e.function == 0xB:
            e = dataclasses.replace(e, edx=index)
        out.append(e)
    return out


def cpuid_for(model: str, supported: Sequence[CpuidEntry], index: int,
              count: int) -> list[CpuidEntry]:
    """The CPUID entries of vCPU ``index`` of ``count`` for ``model`` (one of
    :data:`CPU_MODELS`), from what KVM supports."""
    if model == "qemu64":
        return _qemu64(supported, index, count)
    if model == "host":
        return _host(supported, index, count)
    raise ValueError(f"-cpu {model}: unknown CPU model (vmforge has: {', '.join(CPU_MODELS)})")
