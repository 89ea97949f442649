# Counting compiled code's ways out by why (included by riscv_jit.pxi), to find
# what sends a program back to the interpreter.  Off unless VMFORGE_JIT_EXITS is
# set in the environment when the module is imported: then every way out of
# every region compiled from then on adds one to its counter (``add qword [rdx],
# 1``; the harts of a process share the counters, unlocked: a diagnosis, not a
# figure to rely on to the unit) and the counts are written to stderr when the
# process exits (and are returned by _jit_exit_counts).

import atexit
import sys

cdef enum:
    WHY_EVENT = 0               # a trap or event from a slow path
    WHY_LIM = 1                 # lim reached on a jump inside the region
    WHY_LOAD = 2                # a load's slow path that did not read RAM plainly
    WHY_STORE = 3               # a store's slow path that hit code, a device, a hook
    WHY_RESV = 4                # a store that cleared a reservation
    WHY_JALR = 5                # jalr: not to a region head, or lim reached
    WHY_PAGE = 6                # to another page: lim, no TLB entry, no region head
    WHY_XPAGE = 7               # an instruction crossing the page ends the region
    WHY_HOOK = 8                # a hooked instruction
    WHY_MAX = 9                 # the region is JIT_MAX instructions long
    WHY_JUMP = 10               # a jump out of the region, no region head there, or lim
    WHY_EXEC = 11               # an atomic or F/D access compiled as a call: not plain RAM
    WHY_OP = 16                 # + op: an instruction compiled code does not run
    NWHY = WHY_OP + OP_COUNT

cdef uint64_t jit_exits[NWHY]
cdef int jit_count_exits = 0

cdef dict WHY_NAMES = {WHY_EVENT: "event", WHY_LIM: "lim", WHY_LOAD: "load slow path",
                       WHY_STORE: "store slow path", WHY_RESV: "reservation",
                       WHY_JALR: "jalr", WHY_PAGE: "other page", WHY_XPAGE: "page-crossing insn",
                       WHY_HOOK: "hook", WHY_MAX: "region full", WHY_JUMP: "jump out, no head",
                       WHY_EXEC: "atomic or F/D access not to plain RAM"}


cdef void count_exit(Jit *a, int why) noexcept nogil:
    """When counting: one more way out for ``why`` (rdx and the flags clobbered)."""
    if not jit_count_exits or why < 0 or why >= NWHY:
        return
    imm64(a, RDX, <int64_t><uintptr_t>&jit_exits[why])
    alu_m_imm8(a, 1, ALU_ADD, RDX, 0, 1)            # add qword [rdx], 1


def _jit_exit_counts():
    """{why: ways out} counted so far (VMFORGE_JIT_EXITS), largest first."""
    cdef int i
    out = {}
    for i in range(NWHY):
        if jit_exits[i]:
            out[WHY_NAMES.get(i, f"op {i - WHY_OP}")] = jit_exits[i]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _jit_exits_report():
    counts = _jit_exit_counts()
    total = sum(counts.values())
    sys.stderr.write(f"vmforge: compiled code's ways out: {total}\n")
    for why, n in counts.items():
        sys.stderr.write(f"  {n:12d}  {why}\n")


if os.environ.get("VMFORGE_JIT_EXITS"):
    jit_count_exits = 1
    atexit.register(_jit_exits_report)
