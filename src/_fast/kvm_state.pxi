# vCPU state ioctls of vmforge._fast.kvm (included by kvm.pyx): registers, special
# registers, FPU, MSRs, CPUID, LAPIC, MP state, guest debug, interrupts, debug
# registers, XCRs, XSAVE, vCPU events.

# -- vCPU state -------------------------------------------------------------------------

REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


def get_regs(int fd):
    """``KVM_GET_REGS`` as a tuple in :data:`REG_NAMES` order."""
    cdef kvm_regs r
    cdef uint64_t *p = <uint64_t *>&r
    _check(ioctl(fd, KVM_GET_REGS, &r), "KVM_GET_REGS")
    return tuple([p[i] for i in range(18)])


def set_regs(int fd, values):
    cdef kvm_regs r
    cdef uint64_t *p = <uint64_t *>&r
    cdef int i
    if len(values) != 18:
        raise ValueError("kvm_regs holds 18 registers")
    for i in range(18):
        p[i] = values[i]
    _check(ioctl(fd, KVM_SET_REGS, &r), "KVM_SET_REGS")


cdef tuple _seg_out(kvm_segment *s):
    return (s.base, s.limit, s.selector, s.type, s.present, s.dpl, s.db, s.s, s.l, s.g,
            s.avl, s.unusable)


cdef void _seg_in(kvm_segment *s, tuple t) except *:
    (s.base, s.limit, s.selector, s.type, s.present, s.dpl, s.db, s.s, s.l, s.g,
     s.avl, s.unusable) = t


SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


def get_sregs(int fd):
    """``KVM_GET_SREGS`` as a dict: segments as 12-tuples (kvm_segment order), gdt/idt as
    (base, limit), control registers as ints, interrupt_bitmap as a 4-tuple."""
    cdef kvm_sregs s
    _check(ioctl(fd, KVM_GET_SREGS, &s), "KVM_GET_SREGS")
    return {
        "cs": _seg_out(&s.cs), "ds": _seg_out(&s.ds), "es": _seg_out(&s.es),
        "fs": _seg_out(&s.fs), "gs": _seg_out(&s.gs), "ss": _seg_out(&s.ss),
        "tr": _seg_out(&s.tr), "ldt": _seg_out(&s.ldt),
        "gdt": (s.gdt.base, s.gdt.limit), "idt": (s.idt.base, s.idt.limit),
        "cr0": s.cr0, "cr2": s.cr2, "cr3": s.cr3, "cr4": s.cr4, "cr8": s.cr8,
        "efer": s.efer, "apic_base": s.apic_base,
        "interrupt_bitmap": tuple([s.interrupt_bitmap[i] for i in range(4)]),
    }


def set_sregs(int fd, dict d):
    cdef kvm_sregs s
    memset(&s, 0, sizeof(s))
    _seg_in(&s.cs, tuple(d["cs"]))
    _seg_in(&s.ds, tuple(d["ds"]))
    _seg_in(&s.es, tuple(d["es"]))
    _seg_in(&s.fs, tuple(d["fs"]))
    _seg_in(&s.gs, tuple(d["gs"]))
    _seg_in(&s.ss, tuple(d["ss"]))
    _seg_in(&s.tr, tuple(d["tr"]))
    _seg_in(&s.ldt, tuple(d["ldt"]))
    s.gdt.base, s.gdt.limit = d["gdt"]
    s.idt.base, s.idt.limit = d["idt"]
    s.cr0 = d["cr0"]
    s.cr2 = d["cr2"]
    s.cr3 = d["cr3"]
    s.cr4 = d["cr4"]
    s.cr8 = d["cr8"]
    s.efer = d["efer"]
    s.apic_base = d["apic_base"]
    for i, v in enumerate(d["interrupt_bitmap"]):
        s.interrupt_bitmap[i] = v
    _check(ioctl(fd, KVM_SET_SREGS, &s), "KVM_SET_SREGS")


def get_fpu(int fd):
    """``KVM_GET_FPU`` as a dict (fpr and xmm as bytes of 8x16 and 16x16)."""
    cdef kvm_fpu f
    _check(ioctl(fd, KVM_GET_FPU, &f), "KVM_GET_FPU")
    return {"fpr": PyBytes_FromStringAndSize(<char *>f.fpr, 128), "fcw": f.fcw,
            "fsw": f.fsw, "ftwx": f.ftwx, "last_opcode": f.last_opcode,
            "last_ip": f.last_ip, "last_dp": f.last_dp,
            "xmm": PyBytes_FromStringAndSize(<char *>f.xmm, 256), "mxcsr": f.mxcsr}


def set_fpu(int fd, dict d):
    cdef kvm_fpu f
    cdef const unsigned char[::1] fpr = d["fpr"]
    cdef const unsigned char[::1] xmm = d["xmm"]
    if fpr.shape[0] != 128 or xmm.shape[0] != 256:
        raise ValueError("fpr holds 128 bytes, xmm 256")
    memset(&f, 0, sizeof(f))
    memcpy(f.fpr, &fpr[0], 128)
    memcpy(f.xmm, &xmm[0], 256)
    f.fcw = d["fcw"]
    f.fsw = d["fsw"]
    f.ftwx = d["ftwx"]
    f.last_opcode = d["last_opcode"]
    f.last_ip = d["last_ip"]
    f.last_dp = d["last_dp"]
    f.mxcsr = d["mxcsr"]
    _check(ioctl(fd, KVM_SET_FPU, &f), "KVM_SET_FPU")


def get_msrs(int fd, indices):
    """``{index: value}`` for the MSRs KVM returned (it stops at the first it refuses)."""
    cdef int n = len(indices), i
    cdef long r
    cdef kvm_msrs *m = <kvm_msrs *>calloc(1, sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry))
    if m == NULL:
        raise MemoryError()
    try:
        m.nmsrs = n
        for i in range(n):
            m.entries[i].index = indices[i]
        r = ioctl(fd, KVM_GET_MSRS, m)
        _check(r, "KVM_GET_MSRS")
        return {m.entries[i].index: m.entries[i].data for i in range(r)}
    finally:
        free(m)


def set_msrs(int fd, dict values):
    """Set MSRs; returns how many KVM accepted (it stops at the first it refuses)."""
    cdef int n = len(values), i = 0
    cdef long r
    cdef kvm_msrs *m = <kvm_msrs *>calloc(1, sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry))
    if m == NULL:
        raise MemoryError()
    try:
        m.nmsrs = n
        for index, value in values.items():
            m.entries[i].index = index
            m.entries[i].data = value
            i += 1
        r = ioctl(fd, KVM_SET_MSRS, m)
        _check(r, "KVM_SET_MSRS")
        return r
    finally:
        free(m)


def set_cpuid2(int fd, entries):
    """``KVM_SET_CPUID2`` from (function, index, flags, eax, ebx, ecx, edx) tuples."""
    cdef int n = len(entries), i
    cdef kvm_cpuid2 *c = <kvm_cpuid2 *>calloc(1, sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2))
    if c == NULL:
        raise MemoryError()
    try:
        c.nent = n
        for i in range(n):
            e = entries[i]
            (c.entries[i].function, c.entries[i].index, c.entries[i].flags, c.entries[i].eax,
             c.entries[i].ebx, c.entries[i].ecx, c.entries[i].edx) = e
        _check(ioctl(fd, KVM_SET_CPUID2, c), "KVM_SET_CPUID2")
    finally:
        free(c)


def get_lapic(int fd):
    """The local APIC's 1 KiB register page (``KVM_GET_LAPIC``)."""
    cdef kvm_lapic_state s
    _check(ioctl(fd, KVM_GET_LAPIC, &s), "KVM_GET_LAPIC")
    return PyBytes_FromStringAndSize(s.regs, 1024)


def set_lapic(int fd, const unsigned char[::1] regs):
    cdef kvm_lapic_state s
    if regs.shape[0] != 1024:
        raise ValueError("the LAPIC page holds 1024 bytes")
    memcpy(s.regs, &regs[0], 1024)
    _check(ioctl(fd, KVM_SET_LAPIC, &s), "KVM_SET_LAPIC")


def get_mp_state(int fd):
    cdef kvm_mp_state s
    _check(ioctl(fd, KVM_GET_MP_STATE, &s), "KVM_GET_MP_STATE")
    return s.mp_state


def set_mp_state(int fd, uint32_t state):
    cdef kvm_mp_state s
    s.mp_state = state
    _check(ioctl(fd, KVM_SET_MP_STATE, &s), "KVM_SET_MP_STATE")


def set_guest_debug(int fd, uint32_t control, debugreg=None):
    """``KVM_SET_GUEST_DEBUG``: ``control`` flags, the eight debug registers (DR0-DR7,
    4 and 5 unused) for hardware breakpoints."""
    cdef kvm_guest_debug g
    cdef int i
    memset(&g, 0, sizeof(g))
    g.control = control
    if debugreg is not None:
        for i in range(8):
            g.arch.debugreg[i] = debugreg[i]
    _check(ioctl(fd, KVM_SET_GUEST_DEBUG, &g), "KVM_SET_GUEST_DEBUG")


def interrupt(int fd, uint32_t irq):
    """``KVM_INTERRUPT``: queue external interrupt ``irq`` (no in-kernel irqchip)."""
    cdef kvm_interrupt i
    i.irq = irq
    _check(ioctl(fd, KVM_INTERRUPT, &i), "KVM_INTERRUPT")


def enable_cap(int fd, uint32_t cap, uint32_t flags=0, args=()):
    """``KVM_ENABLE_CAP`` on a VM or vCPU with up to four arguments."""
    cdef kvm_enable_cap c
    memset(&c, 0, sizeof(c))
    c.cap = cap
    c.flags = flags
    for i, a in enumerate(args):
        c.args[i] = a
    _check(ioctl(fd, KVM_ENABLE_CAP, &c), "KVM_ENABLE_CAP")


def get_debugregs(int fd):
    """``KVM_GET_DEBUGREGS`` as (db0, db1, db2, db3, dr6, dr7, flags)."""
    cdef kvm_debugregs d
    _check(ioctl(fd, KVM_GET_DEBUGREGS, &d), "KVM_GET_DEBUGREGS")
    return (d.db[0], d.db[1], d.db[2], d.db[3], d.dr6, d.dr7, d.flags)


def set_debugregs(int fd, values):
    cdef kvm_debugregs d
    memset(&d, 0, sizeof(d))
    d.db[0], d.db[1], d.db[2], d.db[3], d.dr6, d.dr7, d.flags = values
    _check(ioctl(fd, KVM_SET_DEBUGREGS, &d), "KVM_SET_DEBUGREGS")


def get_xcrs(int fd):
    """``KVM_GET_XCRS`` as ``{xcr: value}``."""
    cdef kvm_xcrs x
    memset(&x, 0, sizeof(x))
    _check(ioctl(fd, KVM_GET_XCRS, &x), "KVM_GET_XCRS")
    return {x.xcrs[i].xcr: x.xcrs[i].value for i in range(min(x.nr_xcrs, 16))}


def set_xcrs(int fd, dict values):
    cdef kvm_xcrs x
    cdef int i = 0
    if len(values) > 16:
        raise ValueError("at most 16 XCRs")
    memset(&x, 0, sizeof(x))
    for k, v in values.items():
        x.xcrs[i].xcr = k
        x.xcrs[i].value = v
        i += 1
    x.nr_xcrs = i
    _check(ioctl(fd, KVM_SET_XCRS, &x), "KVM_SET_XCRS")


cdef bytes _get_raw(int fd, unsigned long request, size_t size, str what):
    cdef bytearray buf = bytearray(size)
    cdef unsigned char[::1] v = buf
    _check(ioctl(fd, request, &v[0]), what)
    return bytes(buf)


cdef _set_raw(int fd, unsigned long request, size_t size, const unsigned char[::1] data,
              str what):
    if data.shape[0] != <Py_ssize_t>size:
        raise ValueError(f"{what} takes {size} bytes, not {data.shape[0]}")
    cdef bytearray buf = bytearray(data)
    cdef unsigned char[::1] v = buf
    _check(ioctl(fd, request, &v[0]), what)


def get_vcpu_events(int fd):
    """``struct kvm_vcpu_events`` as the kernel lays it out (pending exceptions,
    interrupts, NMIs, SMM): bytes to save and give back to ``set_vcpu_events``."""
    return _get_raw(fd, KVM_GET_VCPU_EVENTS, sizeof(kvm_vcpu_events), "KVM_GET_VCPU_EVENTS")


def set_vcpu_events(int fd, data):
    _set_raw(fd, KVM_SET_VCPU_EVENTS, sizeof(kvm_vcpu_events), data, "KVM_SET_VCPU_EVENTS")


def get_xsave(int fd):
    """The 4 KiB XSAVE area (``KVM_GET_XSAVE``)."""
    return _get_raw(fd, KVM_GET_XSAVE, sizeof(kvm_xsave), "KVM_GET_XSAVE")


def set_xsave(int fd, data):
    _set_raw(fd, KVM_SET_XSAVE, sizeof(kvm_xsave), data, "KVM_SET_XSAVE")
