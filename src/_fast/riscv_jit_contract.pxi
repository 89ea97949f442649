# What the compiled tier's code relies on, checked (included by riscv_jit.pxi).
#
# Layouts the generated code reads by offset are checked when the module is
# imported (_jit_contracts; a mismatch fails the import with the fact that broke);
# the C functions it calls by address have the types below, so a changed
# signature fails the build; the bytes it writes are bounded (INSN_MAX per
# instruction, STUB_MAX per slow path, HEAD_MAX before the first instruction):
# jit_compile checks the room left before each piece and abandons the region
# rather than write past the buffer, and JIT_ROOM, kept free before each
# region is begun, is their sum for the largest region (the bounds: riscv_jit.pxi).

# called from compiled code with the SysV ABI: rdi, rsi, rdx, rcx; int in eax
ctypedef int (*load_slow_fn)(Hart h, uint64_t va, int size, uint64_t *v) noexcept nogil
ctypedef int (*store_slow_fn)(Hart h, uint64_t va, int size, uint64_t v) noexcept nogil
ctypedef int (*resv_clear_fn)(ResvTable *t, uint8_t *host, int size) noexcept nogil
ctypedef int (*exec_call_fn)(Hart h, Rec *r) noexcept nogil
cdef load_slow_fn LOAD_SLOW = load_slow_call
cdef store_slow_fn STORE_SLOW = store_slow
cdef resv_clear_fn RESV_CLEAR = resv_clear_call
cdef exec_call_fn EXEC_CALL = exec_call


cdef inline bint jit_room(Jit *a, int64_t need) noexcept nogil:
    """Whether ``need`` more bytes fit in the code buffer."""
    return RV_PTR_DIFF(a.limit, a.p) >= need


def _jit_contracts():
    """{fact: holds} for each layout fact the generated code reads by offset."""
    cdef Rec rec
    cdef TlbEntry e
    cdef ResvTable t
    cdef CodePage *cp = NULL
    return {
        "Rec is 16 bytes (records at page offset * 8)": sizeof(Rec) == 16,
        "Rec.op: 2 bytes at 0 (movzx word)": RV_PTR_DIFF(&rec.op, &rec) == 0 and sizeof(rec.op) == 2,
        "Rec.imm and .bits: 8 bytes at 8 (an OP_JIT record's code)":
            RV_PTR_DIFF(&rec.imm, &rec) == 8 and RV_PTR_DIFF(&rec.bits, &rec) == 12 and
            sizeof(void *) == 8,
        "TlbEntry is 32 bytes (index = (va >> 7) & (255 << 5))": sizeof(TlbEntry) == 32,
        "TlbEntry.tag at 0": RV_PTR_DIFF(&e.tag, &e) == 0,
        "TlbEntry.addend at 8": RV_PTR_DIFF(&e.addend, &e) == 8,
        "TlbEntry.pad at 24 (the write entry's xmap)": RV_PTR_DIFF(&e.pad, &e) == 24,
        "ResvTable.nactive: 4 bytes at 0": RV_PTR_DIFF(&t.nactive, &t) == 0 and sizeof(t.nactive) == 4,
        "CodePage.xmap: a byte per halfword": sizeof(cp.xmap) == 2048,
        "x[] holds 8-byte registers": sizeof(uint64_t) == 8,
        "a region's descriptor fits DESC_MAX (a label per instruction, its alignment)":
            sizeof(EntryDesc) + JIT_MAX * sizeof(EntryLabel) + 8 <= DESC_MAX,
    }


def _jit_bounds(Hart h):
    """The emitter's bounds and the largest pieces it wrote for ``h`` so far."""
    cdef Jit *a = <Jit *>h.jit_work
    return {"insn_max": INSN_MAX, "stub_max": STUB_MAX, "head_max": HEAD_MAX,
            "room": JIT_ROOM, "buffer": JIT_BYTES,
            "insn_seen": a.insn_seen if a != NULL else 0,
            "stub_seen": a.stub_seen if a != NULL else 0,
            "head_seen": a.head_seen if a != NULL else 0,
            "abandoned": a.abandoned if a != NULL else 0,
            "probes_again": a.n_again if a != NULL else 0,
            "probes_full": a.n_full if a != NULL else 0,
            "probes_cross": a.n_cross if a != NULL else 0,
            "cached": [g for g in range(33) if a.host_of[g] >= 0] if a != NULL else []}


def _jit_check_contracts():
    broken = [fact for fact, holds in _jit_contracts().items() if not holds]
    if broken:
        raise ImportError("vmforge._fast.riscv: the compiled tier's contract is broken: " +
                          "; ".join(broken))


_jit_check_contracts()
