# A hart's architectural state out of and into the C hart (included by riscv.pyx
# after riscv_face.pxi).  Plain values only; vmforge.migration.hart names, checks
# and versions them, so nothing here validates beyond C's types.

#: the CSR-like fields a state record carries, in this order
STATE_FIELDS = ("mstatus", "medeleg", "mideleg", "mie", "mip_sw", "mip_hw",
                "mtvec", "mscratch", "mepc", "mcause", "mtval",
                "stvec", "sscratch", "sepc", "scause", "stval", "satp",
                "mcounteren", "scounteren", "menvcfg", "senvcfg", "mcountinhibit",
                "fflags", "frm", "instret", "cycle_off", "time_off", "mtimecmp", "stimecmp")


def hart_get_state(Hart h):
    """``(x[0..31], f[0..31], pc, priv, {field: value}, pmpcfg, pmpaddr, mtime)``
    of a hart that is not running."""
    cdef int i
    regs = {
        "mstatus": h.mstatus, "medeleg": h.medeleg, "mideleg": h.mideleg,
        "mie": h.mie, "mip_sw": h.mip_sw, "mip_hw": h.mip_hw,
        "mtvec": h.mtvec, "mscratch": h.mscratch, "mepc": h.mepc, "mcause": h.mcause,
        "mtval": h.mtval, "stvec": h.stvec, "sscratch": h.sscratch, "sepc": h.sepc,
        "scause": h.scause, "stval": h.stval, "satp": h.satp,
        "mcounteren": h.mcounteren, "scounteren": h.scounteren, "menvcfg": h.menvcfg,
        "senvcfg": h.senvcfg, "mcountinhibit": h.mcountinhibit,
        "fflags": h.fflags, "frm": h.frm,
        "instret": h.instret_ + h.cnt, "cycle_off": h.cycle_off,
        "time_off": h.time_off, "mtimecmp": h.mtimecmp, "stimecmp": h.stimecmp,
    }
    return ([0] + [h.x[i] for i in range(1, 32)], [h.f[i] for i in range(32)], h.pc_,
            h.priv, regs, [h.pmpcfg[i] for i in range(16)],
            [h.pmpaddr[i] for i in range(64)], mtime_now(h))


def hart_set_state(Hart h, x, f, unsigned long long pc, int priv, dict regs, pmpcfg,
                   pmpaddr, unsigned long long mtime):
    """Put a checked state into a hart that is not running: the LR/SC reservation
    is dropped (as a trap drops it), TLBs and decoded or compiled code flushed,
    the timer sampled afresh.  ``mtime`` is what a frozen (paused) host clock reads."""
    cdef int i
    for i in range(1, 32):
        h.x[i] = x[i]
    h.x[0] = 0
    for i in range(32):
        h.f[i] = f[i]
    for i in range(16):
        h.pmpcfg[i] = pmpcfg[i]
    for i in range(64):
        h.pmpaddr[i] = pmpaddr[i]
    h.pc_ = pc
    h.mstatus = regs["mstatus"]
    h.medeleg = regs["medeleg"]
    h.mideleg = regs["mideleg"]
    h.mie = regs["mie"]
    h.mip_sw = regs["mip_sw"]
    h.mip_hw = regs["mip_hw"]
    h.mtvec = regs["mtvec"]
    h.mscratch = regs["mscratch"]
    h.mepc = regs["mepc"]
    h.mcause = regs["mcause"]
    h.mtval = regs["mtval"]
    h.stvec = regs["stvec"]
    h.sscratch = regs["sscratch"]
    h.sepc = regs["sepc"]
    h.scause = regs["scause"]
    h.stval = regs["stval"]
    h.satp = regs["satp"]
    h.mcounteren = regs["mcounteren"]
    h.scounteren = regs["scounteren"]
    h.menvcfg = regs["menvcfg"]
    h.senvcfg = regs["senvcfg"]
    h.mcountinhibit = regs["mcountinhibit"]
    h.fflags = regs["fflags"]
    h.frm = regs["frm"]
    h.cnt = 0
    h.instret_ = regs["instret"]
    h.cycle_off = regs["cycle_off"]
    h.time_off = regs["time_off"]
    h.mtimecmp = regs["mtimecmp"]
    h.stimecmp = regs["stimecmp"]
    if h.time_host and h.time_frozen:
        h.frozen_at = mtime
    h.mtip_latch = 0
    h.poll_at = 0
    h.lim = 0
    h.bp_skip_valid = 0
    if h.rs.addr[h.resv_slot] != NULL:
        h.rs.addr[h.resv_slot] = NULL
        h.rs.nactive -= 1
    h.priv = priv
    tlb_forget_banks(h)
    tlb_select(h)
    code_flush(h)
