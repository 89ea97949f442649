# The RISC-V RV64GC hart: shared declarations of riscv.pyx and its riscv_*.pxi parts.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from vmforge._fast.mmio cimport AddressSpace
from vmforge._fast.guestmem cimport GuestRam

# One pre-decoded instruction (16 bytes).  Records of a code page are indexed by
# (physical offset >> 1); op == OP_NONE means "not decoded yet".
cdef struct Rec:
    uint16_t op
    uint8_t rd          # 32 (the sink) stands for x0 where the op writes rd
    uint8_t rs1
    uint8_t rs2
    uint8_t rs3         # rs3, or a sub-operation
    uint8_t len         # 2 or 4
    uint8_t nxt         # bytes to the next record: len * 8
    int32_t imm
    uint32_t bits       # the instruction as fetched (mtval of an illegal instruction)

# A TLB entry: tag = virtual page (low bits clear), or TLB_EMPTY; TLB_IO / TLB_CODE
# flags in the tag force the slow path (device memory / a page holding decoded code).
cdef struct TlbEntry:
    uint64_t tag
    uint64_t addend     # host address - virtual address (RAM pages)
    uint64_t ppage      # physical page
    uint64_t pad        # 32 bytes (one shift); TLB_CODE write entries: &CodePage.xmap

cdef struct CodePage:
    uint64_t ppage      # physical page, or RV_NOPAGE
    uint8_t *host       # host bytes of the page (RAM or ROM)
    uint64_t used[32]   # records whose op was set: cleared when the page is reused
    Rec recs[2050]      # [2048], [2049]: OP_PAGEEND sentinels (falling off the page)
    int njit            # compiled blocks headed here (riscv_jit.pxi)
    uint8_t heat[2048]  # taken jumps to each record, counted towards compiling it
    uint64_t jcover[32] # halfwords holding instructions of compiled blocks
    uint8_t snap[4096]  # the bytes as decoded (fence.i finds writes by others)
    uint8_t xmap[2048]  # halfwords a record or a compiled block may hold (see xmap_trim)
    Rec xrec            # the instruction crossing into the next page, as last decoded,
    int32_t xhi         # from these upper 16 bits (-1: none; see xpage_cached)
    int xlive           # a word of xmap last seen non-zero (code_store)
    uint64_t sync_gen   # the hart's sync_gen when snap was last compared (code_check)

# LR/SC reservations of the harts sharing one RAM: host addresses of 8-byte granules.
cdef struct ResvTable:
    int nactive
    int nharts
    uint8_t *addr[64]

# One trap as ``-d int`` reports it (recorded only while Hart.trace_int is set).
cdef struct TrapRec:
    uint64_t cause      # bit 63: an interrupt
    uint64_t epc
    uint64_t tval
    uint64_t priv       # the privilege the trap came from

# The TLB sets (riscv_tlb.pxi): data sets S and M, then a U and an "S with
# mstatus.SUM" set per address-space bank; fetch sets S and M, then U per bank.
cdef enum:
    NBANK = 16          # address spaces (satp values) whose translations are kept
    NDATA = 2 + 2 * NBANK
    NFETCH = 2 + NBANK

cdef class ReservationSet:
    cdef ResvTable t
    cdef int next_slot
    cdef object __weakref__

cdef class Hart:
    # architectural state
    cdef uint64_t x[33]           # x[32] is the sink for writes to x0
    cdef uint64_t f[32]
    cdef readonly uint64_t pc_
    cdef int priv
    cdef uint64_t mstatus, misa, medeleg, mideleg, mie, mip_sw, mip_hw
    cdef uint64_t mtvec, mscratch, mepc, mcause, mtval
    cdef uint64_t stvec, sscratch, sepc, scause, stval, satp
    cdef uint64_t mcounteren, scounteren, menvcfg, senvcfg, mcountinhibit
    cdef uint32_t fflags, frm
    cdef public int ext_zb        # Zba/Zbb/Zbc/Zbs offered (riscv_zb.pxi)
    cdef uint64_t pmpcfg[16]
    cdef uint64_t pmpaddr[64]
    cdef uint64_t hartid
    cdef uint64_t instret_, cycle_off, instret_off
    # time (see riscv_csr.pxi, mtime_now): instruction-counted,
    #   mtime = (instret + cnt) * time_mul // time_div + time_off,
    # or host time (time_host): mtime = (CLOCK_MONOTONIC ns - host_origin) // tick_ns
    # + time_off, MTIP sampled into mtip_latch at most every HOST_POLL instructions
    cdef uint64_t time_div, time_mul, time_off, mtimecmp
    cdef uint64_t stimecmp        # Sstc: STIP while mtime >= stimecmp and menvcfg.STCE
    cdef public int ext_sstc      # Sstc offered (stimecmp, menvcfg.STCE)
    cdef int time_host, mtip_latch, time_frozen   # mtip_latch: MIP_MTIP|MIP_STIP bits
    cdef uint64_t frozen_at     # mtime while a paused machine's host time stands still
    cdef int64_t host_origin
    cdef uint64_t tick_ns, poll_at
    # run-loop state
    cdef uint64_t cnt           # instructions retired in the current run() so far
    cdef volatile uint64_t lim  # block-boundary check threshold (0 forces a check)
    cdef uint64_t exc_cause, exc_tval
    cdef int stop_reason
    cdef uint64_t traps         # traps taken in the current run() (a trap storm ends it)
    cdef int trace_int          # record traps in trace_recs (-d int)
    cdef int trace_n
    cdef uint64_t trace_dropped
    cdef TrapRec trace_recs[256]
    cdef uint64_t stop_causes   # bitmask of exception causes that stop run()
    cdef uint64_t bp[16]
    cdef int nbp
    cdef uint64_t bp_skip       # resume over the breakpoint at this pc once
    cdef int bp_skip_valid
    cdef int step_mode          # run() counts exactly: one instruction at a time
    # watchpoints and memory hooks (riscv_hooks.pxi): virtual ranges [wlo, whi] of
    # kind WATCH_READ/WATCH_WRITE, each stopping the hart before the access
    # (WATCH_STOP, gdb's Z2-Z4) or calling hook_mem after reads, before writes
    cdef uint64_t wlo[64]
    cdef uint64_t whi[64]
    cdef uint8_t wkind[64]
    cdef int nw
    cdef int w_skip             # the next access runs over a stop-kind watch once
    cdef uint64_t w_hit_addr, w_hit_size
    cdef int w_hit_write
    cdef object hook_mem        # (va, size, is_write, value) -> None
    # code hooks: pcs in [clo, chi] are decoded as OP_BREAK and call hook_code
    cdef uint64_t clo[64]
    cdef uint64_t chi[64]
    cdef int nch
    cdef object hook_code       # (pc, size, sequential) -> None, or an address: quiet until there
    cdef uint64_t code_next     # the pc after the last hooked instruction run
    cdef uint64_t code_quiet    # no calls for code_next... up to here
    # blocks a tracer saw and need not see again (pc -> end, under a state signature)
    cdef uint64_t tbc_pc[1024]
    cdef uint64_t tbc_end[1024]
    cdef uint64_t tbc_sig[1024]
    cdef object hook_trap       # (cause with bit 63 for interrupts, epc, tval) -> None
    cdef object hook_illegal    # (pc, bits) -> True: handled, skip the instruction
    cdef object hook_unmapped   # (pa, size, is_write, value) -> None: fault, or a value
    cdef int hooks_on           # bit 0 trap, bit 1 illegal, bit 2 unmapped
    cdef object hook_mmu        # (va, access 0 load/1 store/2 fetch, ok, pa): -d mmu
    cdef Rec tmp[3]             # a record run outside its page ([1], [2]: OP_PAGEEND)
    # one set of TLBs per translation context (riscv_tlb.pxi: S, M, and per bank of
    # satp values U and S with mstatus.SUM): a privilege, SUM or satp change
    # switches sets instead of flushing; rt/wt follow the data context (MPRV, SUM),
    # ft the privilege
    # rvict and wvict are the read and write TLBs' second ways: the entry a refill
    # pushed out of a slot, at the same place in its row (load_slow and store_slow
    # swap it back in; compiled accesses go through it where it is: victim_probe).
    # Two pages a program uses in turn can share a slot (by ASLR: a stack page and
    # a data page 1 MiB apart).  From rtlb to wtlb is as far as from rvict to
    # wvict, so that an entry's twin in the other table (riscv_jit_mem.pxi,
    # probe_cross) is always an entry
    cdef TlbEntry rtlb[NDATA][256]
    cdef TlbEntry rvict[NDATA][256]
    cdef TlbEntry wtlb[NDATA][256]
    cdef TlbEntry wvict[NDATA][256]
    cdef TlbEntry rfar[NDATA][8]  # entries pushed out of rvict (load_slow looks there
                                  # before walking: three pages sharing a slot)
    cdef TlbEntry ftlb[NFETCH][256]
    cdef uint32_t rfar_next       # the rfar slot the next push-out takes
    cdef uint64_t wrows           # data contexts whose wtlb row may hold an entry (bit c)
    cdef uint64_t frows           # ... whose rfar row may
    cdef uint64_t bank_key[NBANK]   # the satp value each bank's sets translate for
    cdef uint64_t bank_used[NBANK]  # when each was last selected (bank_clock)
    cdef uint64_t bank_clock
    cdef int bank               # the bank of satp
    # the entries of each bank's sets filled since the bank was last cleared (by
    # their offset from rtlb[0][0], as tlog; blog_n -1: more than 128, clear all)
    cdef uint16_t blog[NBANK][128]
    cdef int blog_n[NBANK]
    cdef uint64_t bank_slots[NBANK][4]  # slots (bit i) filled in each bank since its last
                                        # clear: page fences and a full flush look at
                                        # those alone
    # pages fenced for every address space (sfence.vma va) while other banks were in
    # use: a bank catches up when it is selected again (bank_catch_up)
    cdef uint64_t fence_log[256]
    cdef uint64_t fence_seq         # pages logged so far
    cdef uint64_t bank_seq[NBANK]   # fence_seq when each bank last caught up
    cdef int s_local            # the S sets hold a translation that is not global
    cdef int leaf_g             # translate(): its leaf is global (G here or above)
    # the entries of rtlb, rvict, wtlb, wvict and ftlb filled since the last flush (tlb_log), by their
    # offset from rtlb[0][0]: a flush forgets those alone while tlog_on
    cdef uint16_t tlog[256]
    cdef int tlog_n, tlog_on
    cdef uint64_t big_lo, big_hi  # virtual range of the superpages the TLBs hold 4 KiB of
    cdef uint64_t leaf_mask       # translate(): page offset mask of its leaf (0xfff: 4 KiB)
    cdef TlbEntry *rt
    cdef TlbEntry *wt
    cdef TlbEntry *ft
    cdef CodePage *fcode[NFETCH][256]  # beside ftlb: the CodePage each entry led to (checked)
    cdef CodePage **fc            # the current context's row of fcode
    cdef CodePage **ctab
    cdef CodePage *cur_code     # the page the run loop executes from
    cdef int resv_slot
    cdef ResvTable *rs
    # harts on host threads (riscv_atomic.pxi): SC compares and swaps against what
    # LR loaded; device accesses take io_lock (the machine's big lock) when set
    cdef public int smp
    cdef public int pause_ends_run  # harts taking turns on one thread: pause ends run()
    cdef uint64_t resv_val
    cdef public object io_lock
    cdef readonly AddressSpace space
    cdef GuestRam ram
    cdef readonly ReservationSet reservations
    cdef object pyexc           # a device's exception, re-raised by run()
    cdef readonly uint64_t tlb_flushes, code_flushes, code_inits
    cdef readonly uint64_t victim_hits  # TLB misses served by a victim (load/store_slow)
    cdef readonly uint64_t jit_victim_hits  # ... and by compiled accesses (victim_probe)
    cdef readonly uint64_t tlb_fills    # page walks into a TLB entry (tlb_fill)
    cdef readonly uint64_t decodes    # records resolve() decoded
    cdef readonly uint64_t xpage_branches  # page-crossing branches run by xpage_branch
    cdef readonly uint64_t pauses         # pause instructions run (riscv_atomic.pxi)
    cdef readonly uint64_t yields         # host CPU given up by spin-waits (host_yield)
    cdef readonly uint64_t naps           # sleeps of a wfi polling loop (wfi_spin)
    cdef uint64_t wfi_spins               # wfis completed at once in a row (wfi_spin)
    cdef readonly uint64_t code_stores    # stores into decoded pages (code_store)
    cdef readonly uint64_t code_checks    # decoded pages compared with memory (code_check)
    cdef uint64_t sync_gen      # fence.i count: pages compared since are up to date
    cdef unsigned long long ram_gen
    cdef unsigned long long dirty_gen   # the RAM's dirty_gen the write TLB was armed for
    # the compiler of hot blocks (riscv_jit.pxi)
    cdef int jit_on
    cdef uint8_t *jit_buf
    cdef uint8_t *jit_start
    cdef uint8_t *jit_free
    cdef uint8_t *jit_epilogue
    cdef void *jit_work           # the compiler's scratch (a Jit)
    cdef readonly uint64_t jit_regions, jit_resets, jit_calls
    cdef readonly uint64_t exec_calls   # ops run by a call of exec_slow from a region (exec_call)
    # instructions compiled and bytes written in regions; regions headed inside an
    # older one; those made ways into it instead (riscv_jit_entry.pxi)
    cdef readonly uint64_t jit_insns, jit_bytes, jit_covered, jit_stubs
    cdef uint64_t jpc, jcnt, jv   # a block's exit: pc, retired count, slow-load value
    cdef uint64_t jcbase          # the virtual base of the page being run
    cdef int jexit                # the last store_slow changed code or went to a device
    cdef void *jrecs              # and its records

