# Harts on host threads (QEMU's MTTCG): the A extension and fences as atomic
# operations on host memory (included by riscv.pyx before riscv_mmu.pxi).
#
# - AMOs on RAM are one host atomic each (GCC's __atomic builtins: lock-prefixed
#   on x86-64, so also full fences, which covers their aq/rl bits); min/max are a
#   compare-and-swap loop.
# - With ``h.smp`` set (the hart runs on a thread of its own) SC is a
#   compare-and-swap against the value its LR loaded, as QEMU's MTTCG does: the
#   reservation table says whether this hart still holds a reservation, the CAS
#   whether the word is still what LR saw (an ABA change passes, as in QEMU).
# - ``fence`` with a write before and a read after (RVWMO orders it, x86-64's TSO
#   does not) is ``mfence`` while ``h.smp`` is set; every other ordering RVWMO
#   asks of a fence x86-64 keeps by itself.
# - A/D bits are set in a PTE by compare-and-swap (a walk that loses to another
#   hart's change of the PTE reads it again), as the privileged spec asks.

cdef extern from *:
    """
    static inline uint64_t rv_amo_ram(uint8_t *p, int f, uint64_t b, int w) {
        if (w) {
            uint32_t *q = (uint32_t *)p, v = (uint32_t)b, old, nv;
            switch (f) {
            case 0x00: return __atomic_fetch_add(q, v, __ATOMIC_SEQ_CST);
            case 0x01: return __atomic_exchange_n(q, v, __ATOMIC_SEQ_CST);
            case 0x04: return __atomic_fetch_xor(q, v, __ATOMIC_SEQ_CST);
            case 0x0c: return __atomic_fetch_and(q, v, __ATOMIC_SEQ_CST);
            case 0x08: return __atomic_fetch_or(q, v, __ATOMIC_SEQ_CST);
            }
            old = __atomic_load_n(q, __ATOMIC_SEQ_CST);
            do {
                switch (f) {
                case 0x10: nv = (int32_t)old < (int32_t)v ? old : v; break;
                case 0x14: nv = (int32_t)old > (int32_t)v ? old : v; break;
                case 0x18: nv = old < v ? old : v; break;
                default:   nv = old > v ? old : v; break;
                }
            } while (!__atomic_compare_exchange_n(q, &old, nv, 0, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_SEQ_CST));
            return old;
        } else {
            uint64_t *q = (uint64_t *)p, old, nv;
            switch (f) {
            case 0x00: return __atomic_fetch_add(q, b, __ATOMIC_SEQ_CST);
            case 0x01: return __atomic_exchange_n(q, b, __ATOMIC_SEQ_CST);
            case 0x04: return __atomic_fetch_xor(q, b, __ATOMIC_SEQ_CST);
            case 0x0c: return __atomic_fetch_and(q, b, __ATOMIC_SEQ_CST);
            case 0x08: return __atomic_fetch_or(q, b, __ATOMIC_SEQ_CST);
            }
            old = __atomic_load_n(q, __ATOMIC_SEQ_CST);
            do {
                switch (f) {
                case 0x10: nv = (int64_t)old < (int64_t)b ? old : b; break;
                case 0x14: nv = (int64_t)old > (int64_t)b ? old : b; break;
                case 0x18: nv = old < b ? old : b; break;
                default:   nv = old > b ? old : b; break;
                }
            } while (!__atomic_compare_exchange_n(q, &old, nv, 0, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_SEQ_CST));
            return old;
        }
    }
    /* 1 when *p held ``expect`` and now holds ``v`` (4 or 8 bytes, aligned) */
    static inline int rv_cas(uint8_t *p, uint64_t expect, uint64_t v, int w) {
        if (w) {
            uint32_t e = (uint32_t)expect;
            return __atomic_compare_exchange_n((uint32_t *)p, &e, (uint32_t)v, 0,
                                               __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        }
        return __atomic_compare_exchange_n((uint64_t *)p, &expect, v, 0,
                                           __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    static inline void rv_mfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    /* the compiler keeps the accesses on either side in order (no instruction) */
    static inline void rv_cbarrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
    """
    uint64_t rv_amo_ram(uint8_t *p, int f, uint64_t b, int w) noexcept nogil
    bint rv_cas(uint8_t *p, uint64_t expect, uint64_t v, int w) noexcept nogil
    void rv_mfence() noexcept nogil
    void rv_cbarrier() noexcept nogil


cdef inline uint64_t amo_ram(uint8_t *p, int f, uint64_t b, int w) noexcept nogil:
    """AMO ``f`` (funct5 << 0, as amo_fn) on RAM at ``p``: the old value (zero-extended)."""
    return rv_amo_ram(p, f, b, w)


cdef inline bint pte_update(uint8_t *p, uint64_t pte, uint64_t new) noexcept nogil:
    """Set a PTE's A/D bits: False when another hart changed the PTE first."""
    return rv_cas(p, pte, new, 0)


cdef inline bint fence_needs_mfence(uint32_t bits) noexcept nogil:
    """``fence pred, succ`` (pred in bits 27:24, succ in 23:20 of ``bits``): a
    write before and a read after need ``mfence`` on x86-64 when other harts run
    at once (``fence.tso``, fm = 8, does not order a write before a read)."""
    return (bits >> 24) & 1 and (bits >> 21) & 1 and (bits >> 28) != 8


cdef inline void fence_op(Hart h, Rec *r) noexcept nogil:
    if h.smp and fence_needs_mfence(r.bits):
        rv_mfence()


cdef extern from "<sched.h>" nogil:
    int sched_yield()


cdef inline void host_yield(Hart h) noexcept nogil:
    """The hart waits for another (a spin-wait): give the host CPU up.  What it
    waits for -- a lock's holder, a ticket lock's next in line, a hart that has to
    write a flag -- is another hart, whose thread may be waiting for that CPU: on
    a host with fewer free cores than harts, spinning on (compiled, 1-2 G
    instructions a second) starved it for whole host time slices."""
    h.yields += 1
    sched_yield()


cdef inline void pause_op(Hart h) noexcept nogil:
    """``pause``, a spin-wait loop's hint (Linux's ``cpu_relax``): a hart on a host
    thread of its own gives its host CPU up (host_yield); harts taking turns on one
    thread (``pause_ends_run``: HartCluster's round robin) end the turn, run()
    returning at the next block boundary (as on a stop request), so the hart
    waited for runs now rather than after the rest of a 200 K-instruction slice
    spent spinning.  Else a no-op."""
    h.pauses += 1
    if h.smp:
        host_yield(h)
    elif h.pause_ends_run:
        h.stop_reason = STOP_REQUEST
        h.lim = 0


cdef enum:
    WFI_SPINS = 64              # immediate wfis in a row that give the CPU up before naps
    WFI_NAP_NS = 50000          # then each one sleeps this long


cdef extern from "<time.h>" nogil:
    """
    static inline void rv_nap(long ns) {
        struct timespec t = {0, ns};
        nanosleep(&t, NULL);
    }
    """
    void rv_nap(long ns)


cdef void wfi_spin(Hart h) noexcept nogil:
    """A wfi completed at once on a hart thread: an interrupt is pending but not
    taken (disabled), so the guest polls memory around it -- OpenSBI's HSM wait,
    with an IPI left pending, until Linux starts the hart (some 0.3 s of a boot,
    a syscall each turn when it only yields).  The first WFI_SPINS in a row (no
    trap, no real wait between them) give the host CPU up; after that each one
    sleeps WFI_NAP_NS, which is all it adds to the time the wait ends."""
    h.wfi_spins += 1
    if h.wfi_spins <= WFI_SPINS:
        host_yield(h)
    else:
        h.naps += 1
        rv_nap(WFI_NAP_NS)


def own_reservations(Hart h):
    """Give ``h`` a reservation set of its own (harts on threads): other harts'
    stores no longer clear its reservation, the compare-and-swap of its SC sees
    their writes instead, and its stores look at no line other harts write."""
    cdef ReservationSet rs = ReservationSet()
    if h.rs.addr[h.resv_slot] != NULL:
        h.rs.addr[h.resv_slot] = NULL
        h.rs.nactive -= 1
    h.resv_slot = rs.claim()
    h.reservations = rs
    h.rs = &rs.t
