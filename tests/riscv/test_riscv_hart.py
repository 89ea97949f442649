"""The Python face of the hart: run/stop reasons, registers, breakpoints, interrupts,
time, device errors, self-modifying code, several harts."""

import threading

import pytest

from vmforge.accel.interp import RiscvHart, StopReason

ECALL_M = 11


RAM_BASE = 0x8000_0000


@pytest.fixture
def machine(rv_asm, rv_env):
    def build(source):
        return make(rv_asm, rv_env, source)
    return build


def make(rv_asm, rv_env, source):
    image, syms = rv_asm(source)
    space, hart = rv_env.make_machine(image)
    hart.stop_on = {ECALL_M}
    return space, hart, syms


def test_registers_and_csrs(machine):
    _space, hart, _ = machine("addi a0, a1, 1\necall")
    hart.x[11] = 41
    hart.x[0] = 5
    assert hart.x[0] == 0
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION and res.cause == ECALL_M
    assert hart.x[10] == 42
    assert res.pc == RAM_BASE + 4 and res.executed == 1 and hart.instret == 1
    hart.f[3] = 0x4000000000000000
    assert hart.f[3] == 0x4000000000000000
    assert hart.csr("misa") >> 62 == 2
    hart.set_csr("mscratch", 0x1234)
    assert hart.csr("mscratch") == 0x1234
    assert hart.csr("mhartid") == 0
    with pytest.raises(KeyError):
        hart.csr(0x7FF)
    assert hart.priv == 3


def test_budget_stops_at_block_boundary(machine):
    _space, hart, _ = machine("1: addi a0, a0, 1\nj 1b")
    res = hart.run(1000)
    assert res.reason is StopReason.BUDGET
    assert 1000 <= res.executed <= 1002
    assert hart.x[10] == (res.executed + 1) // 2


def test_stop_on_illegal_then_take(machine):
    src = """
        la t0, handler
        csrw mtvec, t0
    bad: .word 0xffffffff
        j bad
    .align 2
    handler:
        csrr a0, mcause
        ecall
    """
    _space, hart, syms = machine(src)
    hart.stop_on = {2, ECALL_M}
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION and res.cause == 2
    assert res.tval == 0xFFFFFFFF and res.pc == syms["bad"]
    hart.take_exception(res.cause, res.tval)
    assert hart.pc == syms["handler"]
    res = hart.run()
    assert res.cause == ECALL_M and hart.x[10] == 2
    assert hart.csr("mepc") == syms["bad"]


def test_breakpoint_stop_and_resume(machine):
    src = """
        li a0, 0
    loop:
        addi a0, a0, 1
    here:
        li t0, 3
        blt a0, t0, loop
        ecall
    """
    _space, hart, syms = machine(src)
    hart.add_breakpoint(syms["here"])
    for i in range(1, 4):
        res = hart.run()
        assert res.reason is StopReason.BREAKPOINT and res.pc == syms["here"]
        assert hart.x[10] == i
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION
    hart.remove_breakpoint(syms["here"])
    assert hart.breakpoints == ()


def test_wfi_then_external_interrupt(machine):
    src = """
        la t0, handler
        csrw mtvec, t0
        li t0, (1 << 11)
        csrw mie, t0
        csrsi mstatus, 8
    idle:
        wfi
        j idle
    .align 2
    handler:
        csrr a0, mcause
        ecall
    """
    _space, hart, syms = machine(src)
    res = hart.run()
    assert res.reason is StopReason.WFI
    assert hart.pc == syms["idle"] + 4
    res = hart.run()                     # nothing pending: wfi again
    assert res.reason is StopReason.WFI
    hart.set_irq_line(11, True)
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION
    assert hart.x[10] == (1 << 63) | 11
    assert hart.csr("mip") & (1 << 11)
    hart.set_irq_line(11, False)
    assert not hart.csr("mip") & (1 << 11)


def test_timer_interrupt_from_mtimecmp(machine):
    src = """
        la t0, handler
        csrw mtvec, t0
        li t0, (1 << 7)
        csrw mie, t0
        csrsi mstatus, 8
    spin:
        addi a1, a1, 1
        j spin
    .align 2
    handler:
        csrr a0, mcause
        rdtime a2
        ecall
    """
    _space, hart, _ = machine(src)
    hart.time_div = 10
    hart.mtimecmp = 500
    res = hart.run(10**7)
    assert res.reason is StopReason.EXCEPTION
    assert hart.x[10] == (1 << 63) | 7
    assert 500 <= hart.x[12] <= 502
    assert 4990 <= hart.instret <= 5030


def test_device_exception_propagates(machine, rv_env):
    src = """
        li t0, 0x100000
        li t1, 7
        addi a0, zero, 1
    store:
        sw t1, 0(t0)
        addi a0, zero, 2
        ecall
    """
    _space, hart, syms = machine(src)
    with pytest.raises(rv_env.ProgramExit) as info:
        hart.run()
    assert info.value.value == 7
    assert hart.pc == syms["store"] and hart.x[10] == 1


def test_mmio_read_value_and_unassigned_access_fault(machine):
    class Dev:
        def read(self, offset, size):
            return 0x1234_5678_9ABC_DEF0 >> (8 * (offset & 7))

        def write(self, offset, size, value):
            pass

    src = """
        la t0, handler
        csrw mtvec, t0
        li t0, 0x200000
        ld a0, 0(t0)
        lhu a1, 2(t0)
        li t0, 0x300000
        ld a2, 0(t0)
        ecall
    .align 2
    handler:
        csrr a3, mcause
        csrr a4, mtval
        ecall
    """
    space, hart, _ = machine(src)
    space.add_mmio(0x200000, Dev(), 0x1000)
    space.on_bad_access = None
    hart.run()
    assert hart.x[10] == 0x1234_5678_9ABC_DEF0
    assert hart.x[11] == 0x9ABC
    assert hart.x[13] == 5 and hart.x[14] == 0x300000


def test_self_modifying_code(machine):
    src = """
        .option norvc
        la t0, target
        lw t1, new_insn
        sw t1, 0(t0)
    target:
        li a0, 1
        ecall
    .align 2
    new_insn:
        li a0, 2
    """
    _space, hart, _ = machine(src)
    hart.run()
    assert hart.x[10] == 2


def test_code_rewritten_between_runs(machine):
    src = """
        .option norvc
    again:
        li a0, 1
        ecall
        j again
    """
    space, hart, syms = machine(src)
    hart.run()
    assert hart.x[10] == 1
    # li a0, 5 (addi a0, zero, 5) written from Python, as a loader would: flush
    space.memory.write(syms["again"], (0x00500513).to_bytes(4, "little"))
    hart.flush_caches()
    hart.pc = syms["again"]
    hart.run()
    assert hart.x[10] == 5


def test_two_harts_reservations(machine):
    src = """
        la a1, word
        lr.d a0, (a1)
        ecall
        li a3, 9
        sc.d a2, a3, (a1)
        ecall
    other:
        la a1, word
        sd zero, (a1)
        ecall
    .data
    word: .dword 5
    """
    for interfere in (False, True):
        _space, h0, syms = machine(src)
        h1 = h0.sibling(1)
        h1.stop_on = {ECALL_M}
        h1.pc = syms["other"]
        assert h1.csr("mhartid") == 1
        h0.run()
        assert h0.x[10] == 5
        if interfere:
            h1.run()
        h0.pc += 4
        h0.run()
        assert h0.x[12] == (1 if interfere else 0)


def test_request_stop_from_another_thread(machine):
    _space, hart, _ = machine("1: j 1b")
    timer = threading.Timer(0.2, hart.request_stop)
    timer.start()
    res = hart.run()
    timer.join()
    assert res.reason is StopReason.REQUEST


def test_hart_needs_address_space():
    with pytest.raises(TypeError):
        RiscvHart(None)


def test_interrupt_priority_order(machine):
    src = """
        .option norvc
        la t0, handler
        csrw mtvec, t0
        li t0, 0xaaa                 # MEIE SEIE MTIE STIE MSIE SSIE
        csrw mie, t0
        csrsi mstatus, 8
    idle:
        j idle
    .align 2
    handler:
        csrr a0, mcause
        ebreak
        mret
    """
    _space, hart, _syms = machine(src)
    hart.stop_on = {3}
    hart.run(100)
    for bit in (1, 3, 5, 7, 9, 11):
        hart.set_irq_line(bit, True)
    order = []
    for _ in range(6):
        res = hart.run(10_000)
        assert res.reason is StopReason.EXCEPTION and res.cause == 3
        cause = hart.x[10]
        assert cause >> 63 == 1, (order, cause, hex(hart.csr("mepc")), hex(hart.csr("mtval")))
        order.append(cause & 0xFF)
        hart.set_irq_line(cause & 0xFF, False)
        hart.pc += 4                     # over the ebreak, to the mret
    assert order == [11, 3, 7, 9, 1, 5]


def test_delegated_interrupts_wait_for_s_mode(machine):
    src = """
        la t0, mhandler
        csrw mtvec, t0
        la t0, shandler
        csrw stvec, t0
        li t0, 0x222                 # SSI STI SEI go to S
        csrw mideleg, t0
        li t0, 0xaaa
        csrw mie, t0
        csrsi mstatus, 8
        li a0, 0
    spin_m:                          # M-mode: a pending S interrupt is not taken
        addi a1, a1, 1
        li t0, 1000
        blt a1, t0, spin_m
        ecall                        # cause 11: to mhandler, which enters S
    .align 2
    mhandler:
        csrr a2, mcause
        li t0, 11
        bne a2, t0, 1f
        li t0, (3 << 11)
        csrc mstatus, t0
        li t0, (1 << 11)
        csrs mstatus, t0
        la t0, in_s
        csrw mepc, t0
        mret
    1:  ebreak
    in_s:                            # SIE clear: the delegated SEI still waits
        li a3, 1
    spin_s:
        addi a1, a1, 1
        li t0, 3000
        blt a1, t0, spin_s
        csrsi sstatus, 2             # SIE: taken now
        j spin_s
    .align 2
    shandler:
        csrr a0, scause
        ebreak
    """
    _space, hart, _ = machine(src)
    hart.stop_on = {3}
    hart.set_irq_line(9, True)           # SEI pending from the start
    res = hart.run(100_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3
    assert hart.x[12] == 11              # only the ecall reached M
    assert hart.x[13] == 1 and hart.x[11] >= 3000
    assert hart.x[10] == (1 << 63) | 9   # SEI taken in S once SIE was set
    assert hart.priv == 1


def test_keyboard_interrupt_stops_a_spinning_guest(machine):
    import _thread

    _space, hart, _ = machine("1: j 1b")
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        hart.run()
    timer.join()
    assert hart.instret > 0


def test_two_harts_interleaved_atomics(machine):
    """Both harts add 1 to one counter 2000 times with an LR/SC loop and to another
    with amoadd, in slices that cut the loops at every point: no update is lost."""
    src = """
        la a1, counters
        li a2, 2000
    loop:
        lr.d t0, (a1)
        j 1f                         # a block boundary between LR and SC
    1:  addi t0, t0, 1
        sc.d t1, t0, (a1)
        beqz t1, 2f
        addi s1, s1, 1               # count lost reservations
        j loop
    2:  li t2, 1
        amoadd.d zero, t2, 8(a1)
        addi a2, a2, -1
        bnez a2, loop
        ecall
    .data
    .align 3
    counters: .dword 0, 0
    """
    src = src.replace("amoadd.d zero, t2, 8(a1)", "addi t3, a1, 8\n        amoadd.d zero, t2, (t3)")
    space, h0, syms = machine(src)
    h1 = h0.sibling(1)
    h1.stop_on = {ECALL_M}
    h1.pc = RAM_BASE
    done = [False, False]
    slices = [7, 13, 5, 11, 3]
    i = 0
    while not all(done):
        for k, h in enumerate((h0, h1)):
            if not done[k]:
                res = h.run(slices[i % len(slices)])
                i += 1
                done[k] = res.reason is StopReason.EXCEPTION
    assert space.memory.read_u64(syms["counters"]) == 4000
    assert space.memory.read_u64(syms["counters"] + 8) == 4000
    assert h0.x[9] + h1.x[9] > 0         # the slices did cut between LR and SC


def test_csr_warl_rules(machine):
    _space, hart, _ = machine("ecall")
    hart.set_csr("mstatus", 3 << 11)                     # MPP = M
    hart.set_csr("mstatus", 2 << 11)                     # reserved MPP: kept
    assert (hart.csr("mstatus") >> 11) & 3 == 3
    assert (hart.csr("mstatus") >> 32) & 0xF == 0xA      # UXL = SXL = 64
    hart.set_csr("mstatus", 3 << 13)                     # FS dirty: SD reads 1
    assert hart.csr("mstatus") >> 63 == 1
    assert hart.csr("sstatus") >> 63 == 1
    assert hart.csr("sstatus") & (3 << 11) == 0          # no MPP in the S view
    hart.set_csr("mtvec", 0x8000_0102)                   # mode 2 is reserved: keeps direct
    assert hart.csr("mtvec") == 0x8000_0100
    hart.set_csr("mtvec", 0x8000_0101)
    assert hart.csr("mtvec") == 0x8000_0101
    hart.set_csr("medeleg", (1 << 64) - 1)
    assert hart.csr("medeleg") == 0xB3FF                 # ecall from M never delegated
    hart.set_csr("mideleg", (1 << 64) - 1)
    assert hart.csr("mideleg") == 0x222                  # S interrupts only
    hart.set_csr("mie", (1 << 64) - 1)
    assert hart.csr("mie") == 0xAAA
    assert hart.csr("sie") == 0x222
    hart.set_csr("sie", 0)
    assert hart.csr("mie") == 0x888
    hart.set_csr("mepc", 0x8000_0003)
    assert hart.csr("mepc") == 0x8000_0002               # IALIGN = 16
    before = hart.csr("satp")
    hart.set_csr("satp", (10 << 60) | 5)                 # Sv57 is not there: ignored
    assert hart.csr("satp") == before
    hart.set_csr("satp", (8 << 60) | (0xFFFF << 44) | 0x1234)
    assert hart.csr("satp") == (8 << 60) | (0xFFFF << 44) | 0x1234   # ASIDLEN = 16
    hart.set_csr("satp", 0)
    hart.set_csr("pmpaddr0", 0x2000_0000)
    hart.set_csr("pmpcfg0", 0x9F)                        # locked, NAPOT, RWX
    hart.set_csr("pmpaddr0", 0x1234)                     # locked: ignored
    hart.set_csr("pmpcfg0", 0)
    assert hart.csr("pmpaddr0") == 0x2000_0000 and hart.csr("pmpcfg0") == 0x9F
    with pytest.raises(KeyError):
        hart.csr(0x3A1)                                  # pmpcfg1 does not exist on RV64
    hart.set_csr("fcsr", 0xFF)
    assert hart.csr("frm") == 7 and hart.csr("fflags") == 0x1F
    hart.set_csr("minstret", 1000)
    assert hart.csr("minstret") == 1000 == hart.instret


def _jal(rd, offset):
    o = offset & 0x1FFFFF
    return (((o >> 20) & 1) << 31) | (((o >> 1) & 0x3FF) << 21) | (((o >> 11) & 1) << 20) \
        | (((o >> 12) & 0xFF) << 12) | (rd << 7) | 0x6F


def test_instructions_across_page_boundaries(rv_env):
    """32-bit instructions whose halves lie on two pages: executed, jumped from,
    stopped at, and faulting on the second half (tval = its address)."""
    from vmforge.memory import AddressSpace

    base = 0x8000_0000
    space = AddressSpace()
    space.add_ram(base, 0x3000)
    space.on_bad_access = None
    put = space.memory.write
    put(base, _jal(0, 0xFFE).to_bytes(4, "little"))
    put(base + 0xFFE, (0x00550513).to_bytes(4, "little"))           # addi a0, a0, 5
    put(base + 0x1002, _jal(0, 0xFFC).to_bytes(4, "little"))       # -> base + 0x1ffe
    beq = (0 << 31) | (0 << 25) | (0 << 20) | (0 << 15) | (0 << 12) | (6 << 8) | 0x63
    put(base + 0x1FFE, beq.to_bytes(4, "little"))                  # beq x0, x0, +12
    put(base + 0x2002, b"\x01\x00")                                # c.nop (skipped)
    put(base + 0x200A, (0x00000073).to_bytes(4, "little"))         # ecall
    put(base + 0x2FFE, (0x00550513).to_bytes(4, "little")[:2])     # half an addi at the end
    hart = RiscvHart(space, pc=base, stop_on={1, 11})
    res = hart.run()
    assert res.cause == 11 and hart.x[10] == 5 and hart.pc == base + 0x200A
    assert hart.instret == 4
    hart.add_breakpoint(base + 0xFFE)                              # a breakpoint on one
    hart.pc = base
    res = hart.run()
    assert res.reason is StopReason.BREAKPOINT and res.pc == base + 0xFFE
    res = hart.run()
    assert res.cause == 11 and hart.x[10] == 10
    hart.pc = base + 0x2FFE                                        # second half unmapped
    res = hart.run()
    assert res.cause == 1 and res.tval == base + 0x3000 and res.pc == base + 0x2FFE


def test_exact_steps(machine):
    src = """
        li a0, 0
    loop:
        addi a0, a0, 1
        addi a1, a1, 2
        j loop
    """
    _space, hart, syms = machine(src)
    res = hart.step()
    assert res.reason is StopReason.BUDGET and res.executed == 1 and hart.pc == syms["loop"]
    for n in range(1, 10):
        res = hart.step()
        assert res.executed == 1 and hart.instret == 1 + n
    assert hart.x[10] + hart.x[11] // 2 == 6                  # 3 loops' worth of addi pairs
    res = hart.run(1000, exact=True)
    assert res.executed == 1000 and hart.instret == 1010
    hart.add_breakpoint(syms["loop"])
    res = hart.run(1000, exact=True)
    assert res.reason is StopReason.BREAKPOINT and res.pc == syms["loop"]
    res = hart.step()                                         # steps over it
    assert res.reason is StopReason.BUDGET and res.executed == 1
