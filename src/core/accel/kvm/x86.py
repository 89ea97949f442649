"""x86 set-up helpers: start a vCPU in real mode at an address, or straight in
64-bit long mode (kernel or user), with no guest instruction spent on the switch.

On hosts where KVM runs nested, guest kernel mode and real mode are emulated
and slow while user mode (CPL3) runs natively: :func:`enter_long_mode` with
``user=True`` starts the guest directly at CPL3 with IOPL 3, so port I/O works
from user mode.
"""

from __future__ import annotations

from typing import Any

from vmforge.accel.kvm.state import DTable, Regs, Segment, Sregs

__all__ = ["CR0_PE", "CR0_PG", "CR4_PAE", "EFER_LMA", "EFER_LME", "GDT_ENTRIES",
           "enter_long_mode", "enter_protected_mode", "enter_real_mode",
           "identity_page_tables"]

CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
RFLAGS_IOPL3 = 3 << 12

#: a flat GDT: null, kernel code64 (0x08), kernel data (0x10), user code64 (0x18),
#: user data (0x20); the selectors :func:`enter_long_mode` loads
GDT_ENTRIES = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00AFFA000000FFFF,
               0x00CFF2000000FFFF)


def identity_page_tables(mem: Any, addr: int, gigabytes: int = 1, user: bool = True) -> int:
    """Write 4-level page tables at ``addr`` (3 pages, 4 KiB-aligned) mapping the first
    ``gigabytes`` (1..512) GiB 1:1 with 2 MiB pages; returns the CR3 value.
    ``mem`` is a :class:`~vmforge.memory.GuestMemory` (or anything with ``write``)."""
    if addr % 4096 or not 1 <= gigabytes <= 512:
        raise ValueError("page tables need a 4 KiB-aligned address and 1..512 GiB")
    flags = 0x7 if user else 0x3                     # present, writable, (user)
    pml4, pdpt, pd = addr, addr + 0x1000, addr + 0x2000
    mem.write(pml4, (pdpt | flags).to_bytes(8, "little") + bytes(4088))
    if gigabytes == 1:
        mem.write(pdpt, (pd | flags).to_bytes(8, "little") + bytes(4088))
        mem.write(pd, b"".join(((i << 21) | flags | 0x80).to_bytes(8, "little")
                               for i in range(512)))
    else:                                            # 1 GiB pages
        mem.write(pdpt, b"".join(((i << 30) | flags | 0x80).to_bytes(8, "little")
                                 for i in range(gigabytes)) + bytes(8 * (512 - gigabytes)))
    return pml4


def _segment(selector: int, code: bool, dpl: int) -> Segment:
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector | dpl,
                   type=0xB if code else 0x3, present=1, dpl=dpl, db=0 if code else 1,
                   s=1, l=1 if code else 0, g=1)


def enter_long_mode(vcpu: Any, cr3: int, rip: int, rsp: int = 0, user: bool = False,
                    gdt: int = 0, regs: Regs | None = None) -> None:
    """Put ``vcpu`` in 64-bit long mode, paging on (``cr3``), at ``rip``: at CPL0 or,
    with ``user``, at CPL3 with IOPL 3.  ``gdt`` is where the guest's GDT lies (for
    reloading selectors; :data:`GDT_ENTRIES` is what it should hold) or 0."""
    s: Sregs = vcpu.get_sregs()
    dpl = 3 if user else 0
    code = _segment(0x18 if user else 0x08, True, dpl)
    data = _segment(0x20 if user else 0x10, False, dpl)
    s.cs = code
    s.ds = s.es = s.fs = s.gs = s.ss = data
    s.tr = Segment(base=0, limit=0x67, selector=0, type=0xB, present=1, dpl=0, db=0, s=0,
                   l=0, g=0)
    s.ldt = Segment(base=0, limit=0, selector=0, type=2, present=0, dpl=0, s=0, unusable=1)
    s.gdt = DTable(gdt, 8 * len(GDT_ENTRIES) - 1)
    s.cr3 = cr3
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    s.efer = EFER_LME | EFER_LMA | EFER_SCE
    vcpu.set_sregs(s)
    r = regs or Regs()
    r.rip = rip
    r.rsp = rsp
    r.rflags = 0x2 | (RFLAGS_IOPL3 if user else 0)
    vcpu.set_regs(r)


def enter_real_mode(vcpu: Any, ip: int, sp: int = 0, cs: int = 0) -> None:
    """Real mode at ``cs:ip`` with every data segment 0 (the reset state otherwise)."""
    s: Sregs = vcpu.get_sregs()
    s.cs.base, s.cs.selector = cs << 4, cs
    for seg in (s.ds, s.es, s.fs, s.gs, s.ss):
        seg.base, seg.selector = 0, 0
    vcpu.set_sregs(s)
    vcpu.set_regs(Regs(rip=ip, rsp=sp, rflags=0x2))


def enter_protected_mode(vcpu: Any, entry: int, *, ebx: int = 0, esi: int = 0) -> None:
    """32-bit protected mode, paging off, at ``entry``: the state the PVH boot ABI
    starts a kernel in (Xen's docs/misc/pvh.pandoc: CR0.PE set and every other
    writable CR0/CR4 bit clear; CS a 32-bit execute/read segment and DS/ES/SS
    read/write segments, base 0, limit 0xffffffff; TR a 32-bit TSS, base 0, limit
    0x67; EFLAGS IF/TF/VM clear; ``%ebx`` the hvm_start_info address).  The
    guest gets no GDT (it loads its own before reloading a selector); KVM only
    needs the hidden segment state set here.  ``esi`` is for the Linux 32-bit
    boot protocol (boot_params)."""
    s: Sregs = vcpu.get_sregs()
    code = Segment(base=0, limit=0xFFFFFFFF, selector=0x08, type=0xB, present=1, dpl=0,
                   db=1, s=1, l=0, g=1)
    data = Segment(base=0, limit=0xFFFFFFFF, selector=0x10, type=0x3, present=1, dpl=0,
                   db=1, s=1, l=0, g=1)
    s.cs = code
    s.ds = s.es = s.fs = s.gs = s.ss = data
    s.tr = Segment(base=0, limit=0x67, selector=0, type=0xB, present=1, dpl=0, db=0, s=0,
                   l=0, g=0)
    s.ldt = Segment(base=0, limit=0, selector=0, type=2, present=0, dpl=0, s=0, unusable=1)
    s.cr0 = CR0_PE | CR0_ET
    s.cr3 = s.cr4 = 0
    s.efer = 0
    vcpu.set_sregs(s)
    vcpu.set_regs(Regs(rip=entry, rbx=ebx, rsi=esi, rflags=0x2))
