# cython: language_level=3
"""The KVM ioctls and the vCPU run loop (x86-64 hosts).

Structures and ioctl numbers come from the kernel's own headers
(``<linux/kvm.h>``, ``<asm/kvm.h>``: the numbers are the headers' ``_IO``/
``_IOR``/``_IOW``/``_IOWR`` macros over the structures' sizes), so there is one
layout, the kernel's.  Integer arguments are passed as C ``unsigned long``
(``KVM_SET_TSS_ADDR 0xfffbd000`` does not overflow a C int here).

:class:`VcpuRunner` runs ``KVM_RUN`` without the GIL, decodes ``kvm_run`` in C
and calls a callbacks object (libkvm's ``kvm_callbacks`` with Python names).
No Python-level policy lives here: ``vmforge.accel.kvm`` builds the API.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR, EAGAIN, E2BIG
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcpy
from posix.signal cimport sigaction_t, sigaction, sigemptyset

import os


#: ioctl numbers, as the kernel headers define them (for tests, tools, benchmarks)
IOCTLS = {
    "KVM_GET_API_VERSION": KVM_GET_API_VERSION, "KVM_CREATE_VM": KVM_CREATE_VM,
    "KVM_CHECK_EXTENSION": KVM_CHECK_EXTENSION, "KVM_GET_VCPU_MMAP_SIZE": KVM_GET_VCPU_MMAP_SIZE,
    "KVM_GET_SUPPORTED_CPUID": KVM_GET_SUPPORTED_CPUID,
    "KVM_GET_MSR_INDEX_LIST": KVM_GET_MSR_INDEX_LIST, "KVM_CREATE_VCPU": KVM_CREATE_VCPU,
    "KVM_SET_USER_MEMORY_REGION": KVM_SET_USER_MEMORY_REGION,
    "KVM_GET_DIRTY_LOG": KVM_GET_DIRTY_LOG, "KVM_SET_TSS_ADDR": KVM_SET_TSS_ADDR,
    "KVM_SET_IDENTITY_MAP_ADDR": KVM_SET_IDENTITY_MAP_ADDR,
    "KVM_CREATE_IRQCHIP": KVM_CREATE_IRQCHIP, "KVM_IRQ_LINE": KVM_IRQ_LINE,
    "KVM_IRQ_LINE_STATUS": KVM_IRQ_LINE_STATUS,
    "KVM_CREATE_PIT2": KVM_CREATE_PIT2, "KVM_IOEVENTFD": KVM_IOEVENTFD, "KVM_IRQFD": KVM_IRQFD,
    "KVM_SET_GSI_ROUTING": KVM_SET_GSI_ROUTING,
    "KVM_RUN": KVM_RUN, "KVM_GET_REGS": KVM_GET_REGS, "KVM_SET_REGS": KVM_SET_REGS,
    "KVM_GET_SREGS": KVM_GET_SREGS, "KVM_SET_SREGS": KVM_SET_SREGS,
    "KVM_GET_FPU": KVM_GET_FPU, "KVM_SET_FPU": KVM_SET_FPU,
    "KVM_GET_MSRS": KVM_GET_MSRS, "KVM_SET_MSRS": KVM_SET_MSRS,
    "KVM_SET_CPUID2": KVM_SET_CPUID2, "KVM_GET_CPUID2": KVM_GET_CPUID2,
    "KVM_GET_LAPIC": KVM_GET_LAPIC, "KVM_SET_LAPIC": KVM_SET_LAPIC,
    "KVM_GET_MP_STATE": KVM_GET_MP_STATE, "KVM_SET_MP_STATE": KVM_SET_MP_STATE,
    "KVM_SET_GUEST_DEBUG": KVM_SET_GUEST_DEBUG, "KVM_INTERRUPT": KVM_INTERRUPT,
    "KVM_NMI": KVM_NMI, "KVM_ENABLE_CAP": KVM_ENABLE_CAP,
    "KVM_GET_VCPU_EVENTS": KVM_GET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS": KVM_SET_VCPU_EVENTS,
    "KVM_GET_DEBUGREGS": KVM_GET_DEBUGREGS, "KVM_SET_DEBUGREGS": KVM_SET_DEBUGREGS,
    "KVM_GET_XSAVE": KVM_GET_XSAVE, "KVM_SET_XSAVE": KVM_SET_XSAVE,
    "KVM_GET_XCRS": KVM_GET_XCRS, "KVM_SET_XCRS": KVM_SET_XCRS,
}

#: sizes of the structures the ioctls carry (what the numbers encode)
SIZES = {
    "kvm_userspace_memory_region": sizeof(kvm_userspace_memory_region),
    "kvm_dirty_log": sizeof(kvm_dirty_log), "kvm_irq_level": sizeof(kvm_irq_level),
    "kvm_pit_config": sizeof(kvm_pit_config), "kvm_ioeventfd": sizeof(kvm_ioeventfd),
    "kvm_irqfd": sizeof(kvm_irqfd),
    "kvm_irq_routing": sizeof(kvm_irq_routing),
    "kvm_irq_routing_entry": sizeof(kvm_irq_routing_entry), "kvm_regs": sizeof(kvm_regs),
    "kvm_sregs": sizeof(kvm_sregs), "kvm_segment": sizeof(kvm_segment),
    "kvm_fpu": sizeof(kvm_fpu), "kvm_msrs": sizeof(kvm_msrs),
    "kvm_msr_entry": sizeof(kvm_msr_entry), "kvm_msr_list": sizeof(kvm_msr_list),
    "kvm_cpuid2": sizeof(kvm_cpuid2), "kvm_cpuid_entry2": sizeof(kvm_cpuid_entry2),
    "kvm_lapic_state": sizeof(kvm_lapic_state), "kvm_mp_state": sizeof(kvm_mp_state),
    "kvm_guest_debug": sizeof(kvm_guest_debug), "kvm_run": sizeof(kvm_run),
    "kvm_interrupt": sizeof(kvm_interrupt), "kvm_enable_cap": sizeof(kvm_enable_cap),
    "kvm_debugregs": sizeof(kvm_debugregs), "kvm_xcrs": sizeof(kvm_xcrs),
    "kvm_vcpu_events": sizeof(kvm_vcpu_events), "kvm_xsave": sizeof(kvm_xsave),
}

EXIT_NAMES = {
    KVM_EXIT_UNKNOWN: "UNKNOWN", KVM_EXIT_EXCEPTION: "EXCEPTION", KVM_EXIT_IO: "IO",
    KVM_EXIT_HYPERCALL: "HYPERCALL", KVM_EXIT_DEBUG: "DEBUG", KVM_EXIT_HLT: "HLT",
    KVM_EXIT_MMIO: "MMIO", KVM_EXIT_IRQ_WINDOW_OPEN: "IRQ_WINDOW_OPEN",
    KVM_EXIT_SHUTDOWN: "SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY", KVM_EXIT_INTR: "INTR",
    KVM_EXIT_SET_TPR: "SET_TPR", KVM_EXIT_TPR_ACCESS: "TPR_ACCESS", KVM_EXIT_NMI: "NMI",
    KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR", KVM_EXIT_SYSTEM_EVENT: "SYSTEM_EVENT",
}

CAPS = {
    "IRQCHIP": KVM_CAP_IRQCHIP, "USER_MEMORY": KVM_CAP_USER_MEMORY,
    "SET_TSS_ADDR": KVM_CAP_SET_TSS_ADDR, "EXT_CPUID": KVM_CAP_EXT_CPUID,
    "NR_VCPUS": KVM_CAP_NR_VCPUS, "MAX_VCPUS": KVM_CAP_MAX_VCPUS,
    "NR_MEMSLOTS": KVM_CAP_NR_MEMSLOTS, "IOEVENTFD": KVM_CAP_IOEVENTFD, "IRQFD": KVM_CAP_IRQFD,
    "IRQFD_RESAMPLE": KVM_CAP_IRQFD_RESAMPLE,
    "PIT2": KVM_CAP_PIT2, "READONLY_MEM": KVM_CAP_READONLY_MEM,
    "SET_IDENTITY_MAP_ADDR": KVM_CAP_SET_IDENTITY_MAP_ADDR,
    "IMMEDIATE_EXIT": KVM_CAP_IMMEDIATE_EXIT, "MP_STATE": KVM_CAP_MP_STATE,
    "INTERNAL_ERROR_DATA": KVM_CAP_INTERNAL_ERROR_DATA, "USER_NMI": KVM_CAP_USER_NMI,
    "SPLIT_IRQCHIP": KVM_CAP_SPLIT_IRQCHIP, "XSAVE": KVM_CAP_XSAVE, "XCRS": KVM_CAP_XCRS,
    "DEBUGREGS": KVM_CAP_DEBUGREGS, "VCPU_EVENTS": KVM_CAP_VCPU_EVENTS,
    "TSC_DEADLINE_TIMER": KVM_CAP_TSC_DEADLINE_TIMER, "X2APIC_API": KVM_CAP_X2APIC_API,
}

API_VERSION = KVM_API_VERSION
MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES
MEM_READONLY = KVM_MEM_READONLY
IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH
IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO
IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN
IRQFD_FLAG_DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN
IRQFD_FLAG_RESAMPLE = KVM_IRQFD_FLAG_RESAMPLE
GUESTDBG_ENABLE = KVM_GUESTDBG_ENABLE
GUESTDBG_SINGLESTEP = KVM_GUESTDBG_SINGLESTEP
GUESTDBG_USE_HW_BP = KVM_GUESTDBG_USE_HW_BP
GUESTDBG_USE_SW_BP = KVM_GUESTDBG_USE_SW_BP
EXIT_IO = KVM_EXIT_IO
EXIT_MMIO = KVM_EXIT_MMIO
EXIT_HLT = KVM_EXIT_HLT
EXIT_SHUTDOWN = KVM_EXIT_SHUTDOWN
EXIT_DEBUG = KVM_EXIT_DEBUG
EXIT_FAIL_ENTRY = KVM_EXIT_FAIL_ENTRY
EXIT_INTERNAL_ERROR = KVM_EXIT_INTERNAL_ERROR
EXIT_SYSTEM_EVENT = KVM_EXIT_SYSTEM_EVENT
EXIT_INTR = KVM_EXIT_INTR
#: what VcpuRunner.run returns when stop() ended the run (not a kernel exit reason)
EXIT_STOPPED = -1


cdef inline int _check(long r, str what) except -1:
    if r < 0:
        e = errno
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return 0


def ioctl_int(int fd, unsigned long request, unsigned long arg=0):
    """``ioctl(fd, request, arg)`` with ``arg`` as an unsigned long; the result."""
    cdef long r
    with nogil:
        r = ioctl(fd, request, arg)
    _check(r, f"ioctl {request:#x}")
    return r


def buffer_address(object buffer):
    """Host address of a writable, contiguous buffer (the caller keeps it alive)."""
    cdef unsigned char[::1] view = memoryview(buffer).cast("B")
    return <unsigned long long>&view[0]


# -- system ioctls ---------------------------------------------------------------------

def get_supported_cpuid(int kvm_fd, int max_entries=256):
    """Entries of ``KVM_GET_SUPPORTED_CPUID`` as (function, index, flags, eax, ebx, ecx, edx)."""
    cdef kvm_cpuid2 *c
    cdef long r
    cdef int i
    while True:
        c = <kvm_cpuid2 *>calloc(1, sizeof(kvm_cpuid2) + max_entries * sizeof(kvm_cpuid_entry2))
        if c == NULL:
            raise MemoryError()
        c.nent = max_entries
        r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c)
        if r < 0 and errno == E2BIG and max_entries < 65536:     # ask with more room
            free(c)
            max_entries *= 2
            continue
        try:
            _check(r, "KVM_GET_SUPPORTED_CPUID")
            return [(c.entries[i].function, c.entries[i].index, c.entries[i].flags,
                     c.entries[i].eax, c.entries[i].ebx, c.entries[i].ecx, c.entries[i].edx)
                    for i in range(c.nent)]
        finally:
            free(c)


def get_msr_index_list(int kvm_fd):
    """MSR indices ``KVM_GET_MSR_INDEX_LIST`` reports."""
    cdef kvm_msr_list probe
    cdef kvm_msr_list *l
    cdef int i
    probe.nmsrs = 0
    ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe)          # E2BIG, sets nmsrs
    l = <kvm_msr_list *>calloc(1, sizeof(kvm_msr_list) + (probe.nmsrs + 1) * 4)
    if l == NULL:
        raise MemoryError()
    try:
        l.nmsrs = probe.nmsrs
        _check(ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l), "KVM_GET_MSR_INDEX_LIST")
        return [l.indices[i] for i in range(l.nmsrs)]
    finally:
        free(l)


# -- VM ioctls --------------------------------------------------------------------------

def set_user_memory_region(int vm_fd, uint32_t slot, uint32_t flags, uint64_t guest_phys_addr,
                           uint64_t memory_size, uint64_t userspace_addr):
    cdef kvm_userspace_memory_region m
    memset(&m, 0, sizeof(m))
    m.slot = slot
    m.flags = flags
    m.guest_phys_addr = guest_phys_addr
    m.memory_size = memory_size
    m.userspace_addr = userspace_addr
    _check(ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &m), "KVM_SET_USER_MEMORY_REGION")


def get_dirty_log(int vm_fd, uint32_t slot, uint64_t npages):
    """The slot's dirty bitmap (bit n: page n written since the last call), as bytes."""
    cdef kvm_dirty_log d
    cdef uint64_t nbytes = ((npages + 63) // 64) * 8
    cdef bytearray bitmap = bytearray(nbytes)
    cdef unsigned char[::1] view = bitmap
    memset(&d, 0, sizeof(d))
    d.slot = slot
    d.dirty_bitmap = &view[0]
    _check(ioctl(vm_fd, KVM_GET_DIRTY_LOG, &d), "KVM_GET_DIRTY_LOG")
    return bytes(bitmap)


def set_identity_map_addr(int vm_fd, uint64_t addr):
    cdef uint64_t a = addr
    _check(ioctl(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &a), "KVM_SET_IDENTITY_MAP_ADDR")


def irq_line(int vm_fd, uint32_t irq, uint32_t level):
    cdef kvm_irq_level l
    l.irq = irq
    l.level = level
    _check(ioctl(vm_fd, KVM_IRQ_LINE, &l), "KVM_IRQ_LINE")


def create_pit2(int vm_fd, uint32_t flags):
    cdef kvm_pit_config c
    memset(&c, 0, sizeof(c))
    c.flags = flags
    _check(ioctl(vm_fd, KVM_CREATE_PIT2, &c), "KVM_CREATE_PIT2")


def ioeventfd(int vm_fd, uint64_t addr, uint32_t length, int fd, uint64_t datamatch,
              uint32_t flags):
    cdef kvm_ioeventfd e
    memset(&e, 0, sizeof(e))
    e.datamatch = datamatch
    e.addr = addr
    e.len = length
    e.fd = fd
    e.flags = flags
    _check(ioctl(vm_fd, KVM_IOEVENTFD, &e), "KVM_IOEVENTFD")


def irqfd(int vm_fd, int fd, uint32_t gsi, uint32_t flags, int resamplefd=-1):
    cdef kvm_irqfd q
    memset(&q, 0, sizeof(q))
    q.fd = fd
    q.gsi = gsi
    q.flags = flags
    q.resamplefd = resamplefd if resamplefd >= 0 else 0
    _check(ioctl(vm_fd, KVM_IRQFD, &q), "KVM_IRQFD")


include "kvm_state.pxi"


# -- the kick signal ----------------------------------------------------------------------

cdef void _kick_handler(int sig) noexcept nogil:
    pass

cdef int _kick_signal = 0


def kick_signal():
    """The real-time signal that kicks a vCPU thread out of ``KVM_RUN`` (installed once,
    an empty handler without SA_RESTART)."""
    global _kick_signal
    cdef sigaction_t sa
    if _kick_signal == 0:
        memset(&sa, 0, sizeof(sa))
        sa.sa_handler = _kick_handler
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        _check(sigaction(SIGRTMIN + 4, &sa, NULL), "sigaction")
        _kick_signal = SIGRTMIN + 4
    return _kick_signal


# -- the run loop -------------------------------------------------------------------------

cdef inline uint64_t _load(uint8_t *p, int size) noexcept nogil:
    cdef uint64_t v = 0
    memcpy(&v, p, size)            # little-endian host
    return v


cdef inline void _store(uint8_t *p, int size, uint64_t v) noexcept nogil:
    memcpy(p, &v, size)


cdef class VcpuRunner:
    """The ``kvm_run`` page of one vCPU and the loop that enters it.

    ``run(callbacks)`` enters the guest until an exit the callbacks do not absorb:
    it returns the exit reason (``EXIT_HLT``, ``EXIT_SHUTDOWN``, ``EXIT_DEBUG``,
    ``EXIT_FAIL_ENTRY``, ``EXIT_INTERNAL_ERROR``, an unknown one...) or
    ``EXIT_STOPPED``.  I/O exits are completed before the next entry.

    KVM finishes a port or MMIO access (the value of an ``in`` or a read into its
    register, ``rip`` past the instruction) only when ``KVM_RUN`` is entered again
    (api.rst, "KVM_RUN"), so a stop that comes after an I/O exit enters once more
    with ``immediate_exit`` set before ``run`` returns ``EXIT_STOPPED``: the state
    read then (a snapshot, a migration) has the access done, not half done.
    """
    cdef int fd
    cdef kvm_run *run_page
    cdef size_t size
    cdef volatile int stop_requested
    cdef volatile int running
    cdef int io_pending     # an I/O exit handled: KVM completes it at the next KVM_RUN
    cdef pthread_t thread
    cdef readonly unsigned long long exits

    def __cinit__(self, int vcpu_fd, size_t mmap_size):
        cdef void *p = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"mmap of kvm_run: {os.strerror(errno)}")
        self.fd = vcpu_fd
        self.run_page = <kvm_run *>p
        self.size = mmap_size
        self.stop_requested = 0
        self.running = 0
        self.io_pending = 0
        self.exits = 0

    def __dealloc__(self):
        if self.run_page != NULL:
            munmap(self.run_page, self.size)
            self.run_page = NULL

    def close(self):
        if self.running:
            raise RuntimeError("the vCPU is running")
        if self.run_page != NULL:
            munmap(self.run_page, self.size)
            self.run_page = NULL

    cdef inline void _need_page(self) except *:
        if self.run_page == NULL:
            raise ValueError("the vCPU is closed")

    def stop(self):
        """End a ``run`` in progress (from any thread) or the next one to start."""
        self._need_page()
        self.stop_requested = 1
        self.run_page.immediate_exit = 1
        if self.running:
            pthread_kill(self.thread, kick_signal())

    def clear_stop(self):
        """Forget a :meth:`stop` that no run has consumed (the vCPU was not running)."""
        self._need_page()
        self.stop_requested = 0
        self.run_page.immediate_exit = 0

    @property
    def request_interrupt_window(self):
        self._need_page()
        return bool(self.run_page.request_interrupt_window)

    @request_interrupt_window.setter
    def request_interrupt_window(self, value):
        self._need_page()
        self.run_page.request_interrupt_window = 1 if value else 0

    @property
    def ready_for_interrupt_injection(self):
        self._need_page()
        return bool(self.run_page.ready_for_interrupt_injection)

    @property
    def if_flag(self):
        self._need_page()
        return bool(self.run_page.if_flag)

    @property
    def exit_reason(self):
        self._need_page()
        return self.run_page.exit_reason

    def exit_info(self):
        """Details of the last exit for error reports: a dict by exit reason."""
        self._need_page()
        cdef kvm_run *r = self.run_page
        cdef uint32_t reason = r.exit_reason
        info = {"reason": reason, "name": EXIT_NAMES.get(reason, f"exit {reason}")}
        if reason == KVM_EXIT_INTERNAL_ERROR:
            n = min(r.internal.ndata, 16)
            info["suberror"] = r.internal.suberror
            info["data"] = [r.internal.data[i] for i in range(n)]
        elif reason == KVM_EXIT_FAIL_ENTRY:
            info["hardware_entry_failure_reason"] = r.fail_entry.hardware_entry_failure_reason
            info["cpu"] = r.fail_entry.cpu
        elif reason == KVM_EXIT_UNKNOWN:
            info["hardware_exit_reason"] = r.hw.hardware_exit_reason
        elif reason == KVM_EXIT_EXCEPTION:
            info["exception"] = r.ex.exception
            info["error_code"] = r.ex.error_code
        elif reason == KVM_EXIT_DEBUG:
            info["exception"] = r.debug.arch.exception
            info["pc"] = r.debug.arch.pc
            info["dr6"] = r.debug.arch.dr6
            info["dr7"] = r.debug.arch.dr7
        elif reason == KVM_EXIT_SYSTEM_EVENT:
            info["type"] = r.system_event.type
        elif reason == KVM_EXIT_IO:
            info.update(direction=r.io.direction, size=r.io.size, port=r.io.port,
                        count=r.io.count)
        elif reason == KVM_EXIT_MMIO:
            info.update(phys_addr=r.mmio.phys_addr, len=r.mmio.len, is_write=r.mmio.is_write)
        return info

    def run(self, object callbacks, object vcpu=None):
        """Enter the guest until an exit ends the run; returns the exit reason.

        ``callbacks`` may define ``pio_in(port, size) -> int``, ``pio_out(port, size,
        value)``, ``mmio_read(addr, size) -> int``, ``mmio_write(addr, size, value)``,
        ``halt(vcpu)``, ``shutdown(vcpu)``, ``debug(vcpu, info)`` (these three: a true
        result re-enters the guest, anything else ends the run), ``pre_run(vcpu)``,
        ``post_run(vcpu)``, ``pio_out_string(port, size, data)`` and ``pio_in_string(port,
        size, count) -> bytes`` (string I/O of more than one element in bulk, when
        defined; else element by element), ``irq_window(vcpu)`` (the guest can take an interrupt now:
        ``request_interrupt_window`` asked for it) and ``tpr_access(vcpu, rip, is_write)``.  An exception in a callback ends the run and propagates.
        """
        self._need_page()
        if self.running:
            raise RuntimeError("the vCPU is already running")
        kick_signal()
        pio_in = getattr(callbacks, "pio_in", None)
        pio_out = getattr(callbacks, "pio_out", None)
        mmio_read = getattr(callbacks, "mmio_read", None)
        mmio_write = getattr(callbacks, "mmio_write", None)
        halt = getattr(callbacks, "halt", None)
        shutdown = getattr(callbacks, "shutdown", None)
        debug = getattr(callbacks, "debug", None)
        pre_run = getattr(callbacks, "pre_run", None)
        post_run = getattr(callbacks, "post_run", None)
        irq_window = getattr(callbacks, "irq_window", None)
        tpr_access = getattr(callbacks, "tpr_access", None)
        pio_out_string = getattr(callbacks, "pio_out_string", None)
        pio_in_string = getattr(callbacks, "pio_in_string", None)
        cdef const unsigned char[::1] got
        cdef kvm_run *r = self.run_page
        cdef int fd = self.fd
        cdef long rc
        cdef int err, size, i
        cdef uint32_t reason, count
        cdef uint16_t port
        cdef uint8_t *data
        cdef uint64_t value, mask
        self.thread = pthread_self()
        self.running = 1
        try:
            while True:
                if self.stop_requested:
                    if not self.io_pending:
                        self.stop_requested = 0
                        r.immediate_exit = 0
                        return EXIT_STOPPED
                    r.immediate_exit = 1    # KVM completes the access, runs nothing
                elif pre_run is not None:
                    pre_run(vcpu)
                with nogil:
                    rc = ioctl(fd, KVM_RUN, 0)
                    err = errno
                self.exits += 1
                self.io_pending = 0
                if rc < 0:
                    if err == EINTR or err == EAGAIN:
                        # a signal: ours (stop) or the process's (Ctrl-C raises here)
                        r.immediate_exit = 0
                        if self.stop_requested:
                            self.stop_requested = 0
                            return EXIT_STOPPED
                        PyErr_CheckSignals()
                        continue
                    raise OSError(err, f"KVM_RUN: {os.strerror(err)}")
                if post_run is not None:
                    post_run(vcpu)
                reason = r.exit_reason
                if reason == KVM_EXIT_IO or reason == KVM_EXIT_MMIO:
                    self.io_pending = 1
                if reason == KVM_EXIT_IO:
                    size = r.io.size
                    port = r.io.port
                    count = r.io.count
                    data = (<uint8_t *>r) + r.io.data_offset
                    if r.io.direction == KVM_EXIT_IO_OUT:
                        if count > 1 and pio_out_string is not None:
                            pio_out_string(port, size,
                                           PyBytes_FromStringAndSize(<char *>data, count * size))
                        elif pio_out is not None:
                            for i in range(count):
                                pio_out(port, size, _load(data + i * size, size))
                    elif count > 1 and pio_in_string is not None:
                        got = pio_in_string(port, size, count)
                        if got.shape[0] != count * size:
                            raise ValueError(f"pio_in_string({port:#x}, {size}, {count}) "
                                             f"returned {got.shape[0]} bytes, not "
                                             f"{count * size}")
                        memcpy(data, &got[0], count * size)
                    else:
                        mask = (1ULL << (8 * size)) - 1
                        for i in range(count):
                            value = mask if pio_in is None else (<uint64_t>pio_in(port, size) & mask)
                            _store(data + i * size, size, value)
                elif reason == KVM_EXIT_MMIO:
                    size = r.mmio.len
                    if size > 8:
                        size = 8
                    if r.mmio.is_write:
                        if mmio_write is not None:
                            mmio_write(r.mmio.phys_addr, size, _load(r.mmio.data, size))
                    else:
                        mask = 0xFFFFFFFFFFFFFFFFULL if size == 8 else (1ULL << (8 * size)) - 1
                        value = mask if mmio_read is None else (
                            <uint64_t>(mmio_read(r.mmio.phys_addr, size) & mask))
                        _store(r.mmio.data, size, value)
                elif reason == KVM_EXIT_INTR:
                    if self.stop_requested:
                        self.stop_requested = 0
                        r.immediate_exit = 0
                        return EXIT_STOPPED
                elif reason == KVM_EXIT_HLT:
                    if halt is None or not halt(vcpu):
                        return reason
                elif reason == KVM_EXIT_SHUTDOWN:
                    if shutdown is None or not shutdown(vcpu):
                        return reason
                elif reason == KVM_EXIT_DEBUG:
                    if debug is None or not debug(vcpu, self.exit_info()):
                        return reason
                elif reason == KVM_EXIT_IRQ_WINDOW_OPEN:
                    if irq_window is not None:
                        irq_window(vcpu)
                elif reason == KVM_EXIT_TPR_ACCESS:
                    if tpr_access is not None:
                        tpr_access(vcpu, r.tpr_access.rip, r.tpr_access.is_write)
                else:
                    return reason
        finally:
            self.running = 0
