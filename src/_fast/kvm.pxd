# The kernel's KVM structures and ioctl numbers (<linux/kvm.h>, <asm/kvm.h>) and the
# libc calls vmforge._fast.kvm uses: declared once, cimported by kvm.pyx.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_SHARED
    void *MAP_FAILED

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    pthread_t pthread_self()
    int pthread_kill(pthread_t thread, int sig)

cdef extern from "<signal.h>" nogil:
    int SIGRTMIN

cdef extern from "<linux/kvm.h>" nogil:
    # system, VM and vCPU ioctls (the header's _IO/_IOR/_IOW/_IOWR values)
    const unsigned long KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION
    struct kvm_irq_routing_entry:
        pass
    struct kvm_irq_routing:
        pass
    const unsigned long KVM_GET_VCPU_MMAP_SIZE, KVM_GET_SUPPORTED_CPUID, KVM_GET_MSR_INDEX_LIST
    const unsigned long KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG
    const unsigned long KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP
    const unsigned long KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_CREATE_PIT2, KVM_IOEVENTFD
    const unsigned long KVM_IRQFD, KVM_SET_GSI_ROUTING
    const unsigned long KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS
    const unsigned long KVM_GET_FPU, KVM_SET_FPU, KVM_GET_MSRS, KVM_SET_MSRS, KVM_SET_CPUID2
    const unsigned long KVM_GET_CPUID2, KVM_GET_LAPIC, KVM_SET_LAPIC
    const unsigned long KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_SET_GUEST_DEBUG
    const unsigned long KVM_INTERRUPT, KVM_NMI, KVM_ENABLE_CAP
    const unsigned long KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS
    const unsigned long KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS
    const unsigned long KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS
    const int KVM_API_VERSION

    const int KVM_EXIT_UNKNOWN, KVM_EXIT_EXCEPTION, KVM_EXIT_IO, KVM_EXIT_HYPERCALL
    const int KVM_EXIT_DEBUG, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_IRQ_WINDOW_OPEN
    const int KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR, KVM_EXIT_SET_TPR
    const int KVM_EXIT_TPR_ACCESS, KVM_EXIT_NMI, KVM_EXIT_INTERNAL_ERROR
    const int KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT

    const int KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
    const int KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO
    const int KVM_IOEVENTFD_FLAG_DEASSIGN
    const int KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE
    const int KVM_PIT_SPEAKER_DUMMY
    const int KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP
    const int KVM_GUESTDBG_USE_SW_BP

    const int KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR
    const int KVM_CAP_EXT_CPUID, KVM_CAP_NR_VCPUS, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_MEMSLOTS
    const int KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_PIT2, KVM_CAP_READONLY_MEM
    const int KVM_CAP_IRQFD_RESAMPLE
    const int KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_MP_STATE
    const int KVM_CAP_INTERNAL_ERROR_DATA, KVM_CAP_USER_NMI, KVM_CAP_SPLIT_IRQCHIP
    const int KVM_CAP_XSAVE, KVM_CAP_XCRS, KVM_CAP_DEBUGREGS, KVM_CAP_VCPU_EVENTS
    const int KVM_CAP_TSC_DEADLINE_TIMER, KVM_CAP_X2APIC_API, KVM_CAP_HLT

    struct kvm_userspace_memory_region:
        uint32_t slot
        uint32_t flags
        uint64_t guest_phys_addr
        uint64_t memory_size
        uint64_t userspace_addr

    struct kvm_dirty_log:
        uint32_t slot
        void *dirty_bitmap

    struct kvm_irq_level:
        uint32_t irq
        uint32_t level

    struct kvm_pit_config:
        uint32_t flags

    struct kvm_ioeventfd:
        uint64_t datamatch
        uint64_t addr
        uint32_t len
        int32_t fd
        uint32_t flags

    struct kvm_irqfd:
        uint32_t fd
        uint32_t gsi
        uint32_t flags
        uint32_t resamplefd

    struct kvm_regs:
        uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp
        uint64_t r8, r9, r10, r11, r12, r13, r14, r15
        uint64_t rip, rflags

    struct kvm_segment:
        uint64_t base
        uint32_t limit
        uint16_t selector
        uint8_t type, present, dpl, db, s, l, g, avl, unusable

    struct kvm_dtable:
        uint64_t base
        uint16_t limit

    struct kvm_sregs:
        kvm_segment cs, ds, es, fs, gs, ss, tr, ldt
        kvm_dtable gdt, idt
        uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base
        uint64_t interrupt_bitmap[4]

    struct kvm_fpu:
        uint8_t fpr[8][16]
        uint16_t fcw, fsw
        uint8_t ftwx
        uint16_t last_opcode
        uint64_t last_ip, last_dp
        uint8_t xmm[16][16]
        uint32_t mxcsr

    struct kvm_msr_entry:
        uint32_t index
        uint64_t data

    struct kvm_msrs:
        uint32_t nmsrs
        kvm_msr_entry entries[0]

    struct kvm_msr_list:
        uint32_t nmsrs
        uint32_t indices[0]

    struct kvm_cpuid_entry2:
        uint32_t function, index, flags, eax, ebx, ecx, edx

    struct kvm_cpuid2:
        uint32_t nent
        kvm_cpuid_entry2 entries[0]

    struct kvm_lapic_state:
        char regs[1024]

    struct kvm_mp_state:
        uint32_t mp_state

    struct kvm_interrupt:
        uint32_t irq

    struct kvm_enable_cap:
        uint32_t cap
        uint32_t flags
        uint64_t args[4]

    struct kvm_debugregs:
        uint64_t db[4]
        uint64_t dr6, dr7, flags

    struct kvm_xcr:
        uint32_t xcr
        uint64_t value

    struct kvm_xcrs:
        uint32_t nr_xcrs
        uint32_t flags
        kvm_xcr xcrs[16]

    struct kvm_vcpu_events:
        pass

    struct kvm_xsave:
        pass

    struct _kvm_tpr_access:
        uint64_t rip
        uint32_t is_write

    struct kvm_guest_debug_arch:
        uint64_t debugreg[8]

    struct kvm_guest_debug:
        uint32_t control
        kvm_guest_debug_arch arch

    # kvm_run: the anonymous union's members are reached by name only
    struct _kvm_hw:
        uint64_t hardware_exit_reason
    struct _kvm_fail_entry:
        uint64_t hardware_entry_failure_reason
        uint32_t cpu
    struct _kvm_ex:
        uint32_t exception
        uint32_t error_code
    struct _kvm_io:
        uint8_t direction
        uint8_t size
        uint16_t port
        uint32_t count
        uint64_t data_offset
    struct _kvm_debug_arch:
        uint32_t exception
        uint64_t pc, dr6, dr7
    struct _kvm_debug:
        _kvm_debug_arch arch
    struct _kvm_mmio:
        uint64_t phys_addr
        uint8_t data[8]
        uint32_t len
        uint8_t is_write
    struct _kvm_internal:
        uint32_t suberror
        uint32_t ndata
        uint64_t data[16]
    struct _kvm_system_event:
        uint32_t type
        uint32_t ndata
        uint64_t data[16]

    struct kvm_run:
        uint8_t request_interrupt_window
        uint8_t immediate_exit
        uint32_t exit_reason
        uint8_t ready_for_interrupt_injection
        uint8_t if_flag
        uint16_t flags
        uint64_t cr8
        uint64_t apic_base
        _kvm_hw hw
        _kvm_fail_entry fail_entry
        _kvm_ex ex
        _kvm_io io
        _kvm_debug debug
        _kvm_mmio mmio
        _kvm_internal internal
        _kvm_system_event system_event
        _kvm_tpr_access tpr_access
