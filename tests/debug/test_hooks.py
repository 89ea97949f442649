"""Unicorn-style hooks (``vmforge.debug.hooks``) on real compiled and interpreted
code: the same calls, values and counts with the compiler on and off; the
compiler keeps the code outside hooked ranges; callbacks change state and stop
the machine; an exception in one reaches the caller."""

from __future__ import annotations

import pytest

from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.debug.hooks import Hooks
from vmforge.memory import AddressSpace
from vmforge.testing.riscv_asm import assemble

RAM = 0x8000_0000
N = 300
# fixed-size instructions, so every address is known:
#  0x00 li t0, 0 / 0x04 li t2, N / 0x08 loop: addi t0, t0, 1 / 0x0c auipc t1, 0
#  0x10 sd t0, 0x200(t1) -> 0x20c / 0x14 ld t3, 0x200(t1) / 0x18 bne t0, t2, loop
#  0x1c .word 0 (illegal) / 0x20 ecall / 0x24 lui t4, 0x40000 (0x4000_0000: no device)
#  0x28 lw t5, 0(t4) / 0x2c wfi / 0x30 j 0x2c
#  0x34 the trap handler: on after the instruction that trapped
PROGRAM = f"""
    .option norvc
    li t0, 0
    li t2, {N}
loop:
    addi t0, t0, 1
    auipc t1, 0
    sd t0, 0x200(t1)
    ld t3, 0x200(t1)
    bne t0, t2, loop
    .word 0x0000000b
    ecall
    lui t4, 0x40000
    lw t5, 0(t4)
1:  wfi
    j 1b
handler:
    csrr t6, mepc
    addi t6, t6, 4
    csrw mepc, t6
    mret
"""
LOOP, COUNTER, ILLEGAL, ECALL, HANDLER = RAM + 0x08, RAM + 0x20C, RAM + 0x1C, RAM + 0x20, RAM + 0x34


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return assemble(PROGRAM, tmp_path_factory.mktemp("hooks"))


def make(image: bytes, jit: bool) -> tuple[RiscvHart, Hooks]:
    space = AddressSpace()
    space.add_ram(RAM, 1 << 20)
    space.memory.load(RAM, image)
    hart = RiscvHart(space, pc=RAM)
    hart.jit = jit
    hart.set_csr("mtvec", HANDLER)
    return hart, Hooks([hart], space.memory)


def run(hart: RiscvHart, until: int = RAM + 0x2C) -> None:
    for _ in range(100):
        result = hart.run(100_000)
        if result.reason is StopReason.WFI or hart.pc >= until:
            return
    raise AssertionError(f"the program did not finish: pc {hart.pc:#x}")


@pytest.mark.parametrize("jit", [True, False])
def test_every_kind_of_hook_sees_the_program(image: bytes, jit: bool) -> None:
    hart, hooks = make(image, jit)
    code: list[tuple[int, int]] = []
    blocks: list[tuple[int, int]] = []
    writes: list[tuple[int, int, int]] = []
    reads: list[tuple[int, int, int]] = []
    traps: list[tuple[int, int, int]] = []
    illegal: list[tuple[int, int]] = []
    unmapped: list[tuple[int, int, bool]] = []
    hooks.code(lambda h, pc, size: code.append((pc, size)), LOOP, LOOP)
    hooks.block(lambda h, pc, size: blocks.append((pc, size)), LOOP, LOOP + 0x10)
    hooks.mem_write(lambda h, a, size, v: writes.append((a, size, v)), COUNTER, COUNTER + 7)
    hooks.mem_read(lambda h, a, size, v: reads.append((a, size, v)), COUNTER, COUNTER)
    hooks.interrupt(lambda h, cause, epc, tval: traps.append((cause, epc, tval)))

    def emulate(h: RiscvHart, pc: int, bits: int) -> bool:
        illegal.append((pc, bits))
        return True                             # skip it: the ecall comes next

    def device(h: RiscvHart, addr: int, size: int, is_write: bool, value: int) -> int:
        unmapped.append((addr, size, is_write))
        return 0x1234_5678

    hooks.invalid_insn(emulate)
    hooks.mmio_unmapped(device)
    run(hart)
    assert code == [(LOOP, 4)] * N
    assert blocks == [(LOOP, 0x14)] * N        # addi .. bne, entered by the branch each time
    assert writes == [(COUNTER, 8, i) for i in range(1, N + 1)]
    assert reads == [(COUNTER, 8, i) for i in range(1, N + 1)]
    assert illegal == [(ILLEGAL, 0x0B)]
    assert traps == [(11, ECALL, 0)]           # ecall from M: no trap for the emulated word
    assert unmapped == [(0x4000_0000, 4, False)]
    assert hart.x[30] == 0x1234_5678            # the load got the hook's value
    assert hart.x[5] == N


def test_the_compiler_keeps_code_outside_the_hooked_range(image: bytes) -> None:
    hart, hooks = make(image, True)
    hooks.code(lambda h, pc, size: None, ECALL, ECALL)
    run(hart)
    assert hart._stats()["jit_regions"] >= 1     # the loop was compiled
    hart2, hooks2 = make(image, True)
    hooks2.code(lambda h, pc, size: None, LOOP, LOOP)
    run(hart2)
    assert hart2.x[5] == hart.x[5] == N
    assert hart2.csr("mcause") == hart.csr("mcause") == 5     # the load from no device


def test_a_code_hook_changes_registers_and_the_pc(image: bytes) -> None:
    hart, hooks = make(image, True)

    def skip_loop(h: RiscvHart, pc: int, size: int) -> None:
        h.x[5] = N - 1                 # the next iteration is the last
        h.pc = LOOP                    # (a jump to where it is: nothing changes)

    hooks.code(skip_loop, LOOP, LOOP)
    run(hart)
    assert hart.x[5] == N


def test_removed_hooks_are_not_called(image: bytes) -> None:
    hart, hooks = make(image, True)
    calls: list[int] = []
    handle = hooks.mem_write(lambda h, a, size, v: calls.append(v), COUNTER, COUNTER)
    hart.run(40)
    seen = len(calls)
    assert seen > 0
    hooks.remove(handle)
    run(hart)
    assert len(calls) == seen and len(hooks) == 0
    with pytest.raises(ValueError):
        hooks.remove(handle)


@pytest.mark.parametrize("kind", ["code", "mem_write", "interrupt"])
def test_an_exception_in_a_hook_stops_the_hart_and_reaches_the_caller(image: bytes,
                                                                      kind: str) -> None:
    hart, hooks = make(image, True)

    class Stop(Exception):
        pass

    def boom(h: RiscvHart, *args: int) -> None:
        raise Stop(kind)

    if kind == "interrupt":
        hooks.interrupt(boom)
    else:
        getattr(hooks, kind)(boom, LOOP if kind == "code" else COUNTER, COUNTER)
    with pytest.raises(Stop):
        run(hart)
    if kind == "mem_write":
        assert hart.pc == RAM + 0x10            # at the store, which did not happen
        assert hart.space.memory.read_u64(COUNTER) == 0


def test_watch_stops_before_the_access_and_steps_over(image: bytes) -> None:
    hart, hooks = make(image, True)
    hooks.watch(COUNTER, COUNTER + 7, 2)
    result = hart.run(1_000_000)
    assert result.reason is StopReason.WATCHPOINT and result.pc == RAM + 0x10
    assert hart.watch_hit() == (COUNTER, 8, True)
    assert hart.step_over_watch().pc == RAM + 0x14
    assert hart.space.memory.read_u64(COUNTER) == 1
    assert hart.run(1_000_000).reason is StopReason.WATCHPOINT and hart.x[5] == 2


def test_bad_hooks_are_refused(image: bytes) -> None:
    _hart, hooks = make(image, True)
    with pytest.raises(TypeError):
        hooks.code(42)                                  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hooks.mem_read(print, 0x2000, 0x1000)
    for i in range(64):
        hooks.code(print, i * 4, i * 4)
    with pytest.raises(ValueError):
        hooks.code(print, 0x1000, 0x1000)
    assert len(hooks) == 64


