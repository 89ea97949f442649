"""A program run twice, compiled and interpreted, for the compiled tier's tests:
the same RAM blocks, data and registers on each hart; the results compared."""

from __future__ import annotations

from collections.abc import Sequence

from rv_randprog import CODE

from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.memory import AddressSpace

#: a program gone wrong (a trap loop at mtvec 0, a loop that never ends) stops here
RUNAWAY = 200_000_000


def words(ws: Sequence[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def run_pair(code: bytes, regs: dict[int, int],
             rams: Sequence[tuple[int, int, bool]] = (), data: tuple[int, bytes] | None = None,
             stop_on: frozenset[int] = frozenset({3}), smp: int = 0):
    """[compiled, interpreter] harts and their address spaces after running
    ``code`` at CODE to a stop: RAM blocks ``(base, size, readonly)`` beside the
    code's, ``data`` = (address, bytes) loaded, ``regs`` set, ``smp`` set (SC a
    compare-and-swap).  Both must stop the same way, by an exception."""
    harts, spaces = [], []
    for jit in (True, False):
        space = AddressSpace()
        space.add_ram(CODE, 1 << 20)
        for base, size, readonly in rams:
            space.add_ram(base, size, readonly=readonly)
        space.memory.load(CODE, code)
        if data is not None:
            space.memory.load(*data)
        hart = RiscvHart(space, pc=CODE, stop_on=set(stop_on))
        hart.jit = jit
        hart.smp = smp
        for i, v in regs.items():
            hart.x[i] = v
        harts.append(hart)
        spaces.append(space)
    stops = [hart.run(max_instructions=RUNAWAY) for hart in harts]
    assert stops[0] == stops[1] and stops[0].reason is StopReason.EXCEPTION, stops
    assert harts[0]._stats()["jit_regions"] > 0
    return harts, spaces


def assert_same(harts, spaces, ranges: Sequence[tuple[int, int]] = ()) -> None:
    """Registers, instret and the memory ``ranges`` (address, size) equal."""
    jit, ref = harts
    for i in range(1, 32):
        assert jit.x[i] == ref.x[i], f"x{i}: {jit.x[i]:#x} != interpreter {ref.x[i]:#x}"
    assert jit.instret == ref.instret
    for addr, size in ranges:
        assert spaces[0].memory.read(addr, size) == spaces[1].memory.read(addr, size)
