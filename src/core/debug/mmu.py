"""Virtual-to-physical translation for the debugger (no side effects).

A debugger reads memory as the hart would see it for a data access: through
Sv39/Sv48 when ``satp`` says so and the effective privilege is S or U (M-mode
loads use ``mstatus.MPP`` when ``MPRV`` is set), as QEMU's
``riscv_cpu_get_phys_page_debug`` does.  The walk reads page tables from guest
RAM and never sets A/D bits; a leaf only needs to be valid (R or X) - the
debugger may look at pages the current mode could not read.
"""

from __future__ import annotations

from vmforge.errors import GuestMemoryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    from vmforge.typing_runtime import Protocol

__all__ = ["read_insn", "translate", "walk"]

PRV_M = 3
_MPRV = 1 << 17
_SATP_MODES = {8: 3, 9: 4}      # Sv39: 3 levels, Sv48: 4
_PPN_MASK = (1 << 44) - 1


class _Hart(Protocol):
    @property
    def priv(self) -> int: ...

    def csr(self, name: str | int) -> int: ...


def translate(hart: _Hart, memory: Any, va: int) -> int | None:
    """The physical address of virtual ``va`` for ``hart``; None when unmapped."""
    found = walk(hart, memory, va)
    return None if found is None else found[0]


def walk(hart: _Hart, memory: Any, va: int, *, fetch: bool = False) -> tuple[int, int] | None:
    """``(physical address, leaf PTE)`` of ``va`` (the PTE is -1 where no paging
    applies), or None when unmapped.  ``fetch``: an instruction fetch, which
    ignores ``mstatus.MPRV``."""
    va &= (1 << 64) - 1
    priv = hart.priv
    if priv == PRV_M and not fetch:
        mstatus = hart.csr("mstatus")
        if mstatus & _MPRV:
            priv = (mstatus >> 11) & 3
    satp = hart.csr("satp")
    levels = _SATP_MODES.get(satp >> 60)
    if priv == PRV_M or levels is None:
        return va, -1
    vabits = 12 + 9 * levels
    top = va >> (vabits - 1)
    if top not in (0, (1 << (65 - vabits)) - 1):     # not sign-extended
        return None
    table = (satp & _PPN_MASK) << 12
    for level in range(levels - 1, -1, -1):
        index = (va >> (12 + 9 * level)) & 0x1FF
        try:
            pte = memory.read_u64(table + 8 * index)
        except (GuestMemoryError, ValueError):
            return None
        if not pte & 1 or (pte & 6) == 4 or pte >> 54:   # invalid, W without R, reserved
            return None
        ppn = (pte >> 10) & _PPN_MASK
        if pte & 0xA:                                     # R or X: a leaf
            span = 12 + 9 * level
            if ppn & ((1 << (9 * level)) - 1):            # misaligned superpage
                return None
            return (ppn << 12) | (va & ((1 << span) - 1)), pte
        table = ppn << 12
    return None


def read_insn(hart: _Hart, memory: Any, va: int) -> bytes | None:
    """The instruction at ``va`` as the hart would fetch it: 2 bytes, or 4 when
    the first parcel says so (the second parcel translated on its own, so an
    instruction may cross a page); None where the fetch would fault."""
    parcels = b""
    for addr in (va, va + 2):
        pa = walk(hart, memory, addr, fetch=True)
        if pa is None:
            return None
        try:
            parcels += bytes(memory.read(pa[0], 2))
        except (GuestMemoryError, ValueError):
            return None
        if parcels[0] & 3 != 3:
            break
    return parcels
