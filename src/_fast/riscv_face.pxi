# The Python-visible classes of the hart: ReservationSet and Hart's state access
# (included last by riscv.pyx; vmforge.accel.interp.RiscvHart builds on them).

cdef class ReservationSet:
    """LR/SC reservations of the harts that share one guest RAM."""

    def __cinit__(self):
        memset(&self.t, 0, sizeof(ResvTable))
        self.next_slot = 0

    def claim(self):
        if self.next_slot >= 64:
            raise ValueError("at most 64 harts can share one reservation set")
        self.next_slot += 1
        self.t.nharts = self.next_slot
        return self.next_slot - 1

    @property
    def active(self):
        """How many harts hold a reservation."""
        return self.t.nactive


cdef class Hart:
    """One RV64GC hart (M/S/U, Sv39/Sv48) running over an ``AddressSpace``.

    The Python layer (``vmforge.accel.interp.RiscvHart``) adds names and checks.
    """

    def __cinit__(self, AddressSpace space not None, unsigned long long hartid=0,
                  ReservationSet reservations=None, *args, **kwargs):
        cdef int i
        self.space = space
        self.ram = space.ram
        self.ram_gen = self.ram.generation
        self.reservations = reservations if reservations is not None else ReservationSet()
        self.resv_slot = self.reservations.claim()
        self.rs = &self.reservations.t         # only once the slot is ours
        self.hartid = hartid
        if RV_PTR_DIFF(&self.ftlb[0][0], &self.rtlb[0][0]) % sizeof(TlbEntry):
            raise AssertionError("the TLBs are not whole entries apart (tlb_log)")
        self.ctab = <CodePage **>PyMem_Malloc(NCODE * sizeof(CodePage *))
        if self.ctab == NULL:
            raise MemoryError()
        for i in range(NCODE):
            self.ctab[i] = NULL
        self.time_div = 1
        self.time_mul = 1
        self.tick_ns = 100
        self.jit_on = os.environ.get("VMFORGE_JIT", "1") != "0"
        self.ext_zb = 1
        self.ext_sstc = 1
        self.reset_state(0)

    def __dealloc__(self):
        cdef int i
        jit_free(self)
        if self.rs != NULL and self.rs.addr[self.resv_slot] != NULL:
            self.rs.addr[self.resv_slot] = NULL      # a gone hart holds no reservation
            self.rs.nactive -= 1
        if self.ctab != NULL:
            for i in range(NCODE):
                if self.ctab[i] != NULL:
                    free(self.ctab[i])
            PyMem_Free(self.ctab)

    def reset_state(self, unsigned long long pc):
        """Reset: M-mode at ``pc``, registers zero, caches dropped."""
        cdef int i
        for i in range(33):
            self.x[i] = 0
        for i in range(32):
            self.f[i] = 0
        self.pc_ = pc
        self.priv = PRV_M
        self.mstatus = MSTATUS_XLEN
        self.medeleg = self.mideleg = self.mie = self.mip_sw = self.mip_hw = 0
        self.mtvec = self.mscratch = self.mepc = self.mcause = self.mtval = 0
        self.stvec = self.sscratch = self.sepc = self.scause = self.stval = self.satp = 0
        self.mcounteren = self.scounteren = self.menvcfg = self.senvcfg = 0
        self.mcountinhibit = 0
        self.fflags = self.frm = 0
        for i in range(16):
            self.pmpcfg[i] = 0
        for i in range(64):
            self.pmpaddr[i] = 0
        self.instret_ = self.cycle_off = 0
        self.time_off = 0
        self.mtimecmp = U64_MAX
        self.stimecmp = 0
        self.cnt = 0
        self.nbp = 0
        self.bp_skip_valid = 0
        if self.rs.addr[self.resv_slot] != NULL:
            self.rs.addr[self.resv_slot] = NULL
            self.rs.nactive -= 1
        tlb_forget_banks(self)
        tlb_select(self)
        code_flush(self)

    # -- run ---------------------------------------------------------------------------

    def _run(self, unsigned long long budget, bint exact=False):
        """Run until ``budget`` instructions retired (checked at block boundaries, or
        after every instruction when ``exact``) or a stop; returns the stop code.
        A device's exception is re-raised."""
        cdef int reason
        if self.ram.generation != self.ram_gen or self.ram.dirty_gen != self.dirty_gen:
            map_check(self)
        self.pyexc = None
        self.step_mode = exact
        with nogil:
            reason = run_loop(self, budget)
        self.step_mode = 0
        self.w_skip = 0
        if reason == STOP_PYEXC:
            exc = self.pyexc
            self.pyexc = None
            raise exc
        return reason

    def _request_stop(self):
        """Make a running ``_run`` return at its next block boundary (any thread)."""
        self.stop_reason = STOP_REQUEST
        rv_mfence()         # seen before lim: the run loop reads them the other way round
        self.lim = 0

    # -- state access (used by vmforge.accel.interp) ------------------------------------

    def _get_x(self, int i):
        return self.x[i] if 0 < i < 32 else 0

    def _set_x(self, int i, unsigned long long v):
        if 0 < i < 32:
            self.x[i] = v

    def _get_f(self, int i):
        return self.f[i]

    def _set_f(self, int i, unsigned long long v):
        self.f[i] = v

    def _get_pc(self):
        return self.pc_

    def _set_pc(self, unsigned long long v):
        self.pc_ = v

    def _get_priv(self):
        return self.priv

    def _set_priv(self, int p):
        if p not in (0, 1, 3):
            raise ValueError(f"privilege {p} is not 0 (U), 1 (S) or 3 (M)")
        set_priv(self, p)

    def _csr_read(self, unsigned int csr):
        """``(ok, value)`` reading ``csr`` at M privilege (no side effects)."""
        cdef uint64_t v = 0
        cdef int p = self.priv
        self.priv = PRV_M
        bad = csr_read(self, csr, &v)
        self.priv = p
        return (not bad), v

    def _csr_write(self, unsigned int csr, unsigned long long v):
        """Write ``csr`` as M-mode software would; False if it does not exist."""
        cdef int p = self.priv
        self.priv = PRV_M
        bad = csr_write(self, csr, v)
        self.priv = p
        if csr == 0xB02:                    # not an instruction: no increment to undo
            self.instret_ = v - self.cnt
        elif csr == 0xB00:
            self.cycle_off = v - self.instret_ - self.cnt
        tlb_flush(self)
        tlb_select(self)
        return not bad

    def _get_instret(self):
        return self.instret_

    def _set_irq(self, int bit, bint level):
        if bit < 0 or bit > 63:
            raise ValueError(f"interrupt bit {bit} out of range")
        if level:
            self.mip_hw |= (<uint64_t>1) << bit
        else:
            self.mip_hw &= ~((<uint64_t>1) << bit)
        self.lim = 0

    def _get_mip_hw(self):
        return self.mip_hw

    def _time(self):
        return mtime_now(self)

    def _set_time(self, unsigned long long t):
        if self.time_host and self.time_frozen:
            self.time_off += t - self.frozen_at
            self.frozen_at = t
            return
        self.time_off = 0
        self.time_off = t - mtime_now(self)
        self.poll_at = 0
        self.lim = 0

    def _get_time_div(self):
        return self.time_div

    def _set_time_div(self, unsigned long long d):
        self._set_icount(1, d)

    def _get_time_mul(self):
        return self.time_mul

    def _set_icount(self, unsigned long long mul, unsigned long long div):
        """Instruction-counted time: ``mtime`` advances ``mul / div`` ticks per
        retired instruction (the current ``mtime`` is kept)."""
        if mul == 0 or div == 0:
            raise ValueError("time_mul and time_div must be positive")
        t = self._time()
        self.time_host = 0
        self.time_frozen = 0
        self.time_mul = mul
        self.time_div = div
        self._set_time(t)

    def _set_host_clock(self, long long origin_ns, unsigned long long tick_ns):
        """Host time: ``mtime`` = (CLOCK_MONOTONIC ns - ``origin_ns``) // ``tick_ns``
        plus the offset guest writes to ``mtime`` made.  A machine moves the
        origin on resume so that its paused time is not seen."""
        if tick_ns == 0:
            raise ValueError("tick_ns must be positive")
        self.time_host = 1
        self.time_frozen = 0
        self.host_origin = origin_ns
        self.tick_ns = tick_ns
        self.poll_at = 0
        self.lim = 0

    def _freeze_host_clock(self):
        """Host time stands still (a paused machine) until ``_set_host_clock``."""
        if self.time_host and not self.time_frozen:
            self.frozen_at = mtime_now(self)
            self.time_frozen = 1

    def _host_origin(self):
        return self.host_origin if self.time_host else None

    def _set_trace_int(self, bint on):
        self.trace_int = on
        self.trace_n = 0
        self.trace_dropped = 0

    def _take_trap_trace(self):
        """([(cause with bit 63 for interrupts, epc, tval, from-priv)...], dropped)
        since the last call; empties the record."""
        cdef int i
        out = [(self.trace_recs[i].cause, self.trace_recs[i].epc, self.trace_recs[i].tval,
                self.trace_recs[i].priv) for i in range(self.trace_n)]
        dropped = self.trace_dropped
        self.trace_n = 0
        self.trace_dropped = 0
        return out, dropped

    def _get_mtimecmp(self):
        return self.mtimecmp

    def _get_stimecmp(self):
        return self.stimecmp

    def _set_mtimecmp(self, unsigned long long v):
        self.mtimecmp = v
        self.poll_at = 0
        self.lim = 0

    def _set_stop_causes(self, unsigned long long mask):
        self.stop_causes = mask

    def _get_stop_causes(self):
        return self.stop_causes

    def _take_exc(self, unsigned long long cause, unsigned long long tval):
        trap(self, cause, tval, 0)

    def _exc_info(self):
        return self.exc_cause, self.exc_tval

    def _set_breakpoints(self, pcs, unsigned long long skip_pc, bint skip):
        cdef int i = 0
        if len(pcs) > 16:
            raise ValueError("at most 16 breakpoints")
        for p in pcs:
            self.bp[i] = p
            i += 1
        self.nbp = i
        self.bp_skip = skip_pc
        self.bp_skip_valid = skip
        code_flush(self)

    def _resume_over(self, unsigned long long pc):
        self.bp_skip = pc
        self.bp_skip_valid = 1

    def _flush(self):
        tlb_flush(self)
        code_flush(self)

    def _stats(self):
        return {"tlb_flushes": self.tlb_flushes, "code_flushes": self.code_flushes,
                "code_inits": self.code_inits, "decodes": self.decodes,
                "xpage_branches": self.xpage_branches, "pauses": self.pauses,
                "yields": self.yields, "naps": self.naps,
                "victim_hits": self.victim_hits, "jit_victim_hits": self.jit_victim_hits,
                "tlb_fills": self.tlb_fills,
                "code_stores": self.code_stores, "code_checks": self.code_checks,
                "jit_regions": self.jit_regions,
                "jit_resets": self.jit_resets, "jit_calls": self.jit_calls,
                "jit_insns": self.jit_insns, "jit_bytes": self.jit_bytes,
                "jit_covered": self.jit_covered, "jit_stubs": self.jit_stubs,
                "exec_calls": self.exec_calls}

    def _jit_code(self):
        """(address, bytes) of the compiled code so far, for a disassembler."""
        if self.jit_buf == NULL:
            return 0, b""
        return <uintptr_t>self.jit_buf, (<char *>self.jit_buf)[:self.jit_free - self.jit_buf]

    @property
    def jit(self):
        """Whether hot blocks are compiled to host code (``VMFORGE_JIT=0``: never)."""
        return bool(self.jit_on)

    @jit.setter
    def jit(self, bint on):
        if not on:
            jit_unlink_all(self)
        self.jit_on = on

    # -- watchpoints and hooks (riscv_hooks.pxi; vmforge.debug.hooks builds on them) ----

    def _set_watch(self, ranges, callback):
        """Watched virtual ranges: ``[(first, last, kind)...]``, kind = 1 read | 2
        write | 4 stop (else ``callback(va, size, is_write, value)`` is called)."""
        cdef int i = 0
        if len(ranges) > 64:
            raise ValueError("at most 64 watched ranges")
        for lo, hi, kind in ranges:
            if hi < lo:
                raise ValueError(f"empty range {lo:#x}..{hi:#x}")
            self.wlo[i] = lo
            self.whi[i] = hi
            self.wkind[i] = kind
            i += 1
        self.nw = i
        self.hook_mem = callback
        tlb_flush(self)
        tlb_select(self)

    def _set_watch_skip(self, bint on):
        """The next access runs over stop-kind watches (resuming after a stop)."""
        self.w_skip = on

    def _watch_hit(self):
        """(address, size, is_write) of the access that stopped the hart last."""
        return self.w_hit_addr, self.w_hit_size, bool(self.w_hit_write)

    def _set_code_hooks(self, ranges, callback):
        """pcs in ``[(first, last)...]`` call ``callback(pc, size, sequential)`` before
        they run (sequential: the pc follows the last hooked instruction run); a
        callback that returns an address is not called again while the hart runs
        straight on below that address; minus that address: nor when the hart comes
        back to this pc in the same state."""
        cdef int i = 0
        if len(ranges) > 64:
            raise ValueError("at most 64 hooked code ranges")
        for lo, hi in ranges:
            self.clo[i] = lo
            self.chi[i] = hi
            i += 1
        self.nch = i
        self.hook_code = callback
        self.code_quiet = 0
        for i in range(1024):
            self.tbc_pc[i] = U64_MAX
        code_flush(self)

    def _set_event_hooks(self, trap=None, illegal=None, unmapped=None):
        """``trap(cause, epc, tval)`` on every trap taken; ``illegal(pc, bits)`` on an
        illegal instruction (True: it was emulated, go on after it);
        ``unmapped(pa, size, is_write, value)`` on an access no device decodes
        (None: the access faults; else the value read / the write is dropped)."""
        self.hook_trap = trap
        self.hook_illegal = illegal
        self.hook_unmapped = unmapped
        self.hooks_on = ((HOOK_TRAP if trap is not None else 0)
                         | (HOOK_ILLEGAL if illegal is not None else 0)
                         | (HOOK_UNMAPPED if unmapped is not None else 0)
                         | (self.hooks_on & HOOK_MMU))

    def _set_mmu_hook(self, callback=None):
        """``callback(va, access, ok, pa)`` on every TLB fill (access 0 load, 1 store,
        2 fetch; ``ok`` False: the translation faults), or None."""
        self.hook_mmu = callback
        self.hooks_on = (self.hooks_on & ~HOOK_MMU) | (HOOK_MMU if callback is not None else 0)
        tlb_flush(self)
        tlb_select(self)
