"""The symbol on QEMU's ``IN: <symbol>`` line: ``lookup_symbol`` of QEMU 7.2.

QEMU keeps, for each ELF it loads (``-kernel``, ``-bios``), only the symbols of
type ``STT_FUNC`` defined in a real section (``hw/elf_ops.h``, ``load_symbols``:
the others are dropped by moving the last entry into their place), sorts them by
address, gives a symbol of size 0 the distance to the next one, and finds an
address by glibc's binary search over ``[value, value + size)``.
``lookup_symbol`` asks the tables newest first and takes the first name found;
nothing found is ``""``.

:class:`SymbolTable` does the same from an ELF's symbol entries, which the
loader reads (this module parses no file).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vmforge.loader import ElfSymbol  # (what the loader reads; re-exported here)

__all__ = ["ElfSymbol", "SymbolTable", "lookup_symbol"]

STT_FUNC = 2
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00


class SymbolTable:
    """The function symbols of one loaded ELF, as QEMU keeps them for ``-d``."""

    def __init__(self, symbols: Iterable[ElfSymbol]) -> None:
        kept = list(symbols)
        i, count = 0, len(kept)
        while i < count:                    # QEMU's in-place filter: the last takes the slot
            sym = kept[i]
            if sym.shndx == SHN_UNDEF or sym.shndx >= SHN_LORESERVE or sym.type != STT_FUNC:
                count -= 1
                if i < count:
                    kept[i] = kept[count]
                continue
            i += 1
        ordered = sorted(kept[:count], key=lambda s: s.value)
        self.entries: list[tuple[int, int, str]] = []
        for n, sym in enumerate(ordered):
            size = sym.size
            if size == 0 and n + 1 < len(ordered):
                size = ordered[n + 1].value - sym.value
            self.entries.append((sym.value, size, sym.name))

    def lookup(self, addr: int) -> str:
        """The name of the function holding ``addr``, or ``""`` (glibc's bsearch)."""
        low, high = 0, len(self.entries)
        while low < high:
            mid = (low + high) // 2
            value, size, name = self.entries[mid]
            if addr < value:
                high = mid
            elif addr >= (value + size) & 0xFFFF_FFFF_FFFF_FFFF:
                low = mid + 1
            else:
                return name
        return ""


def lookup_symbol(tables: Sequence[SymbolTable], addr: int) -> str:
    """QEMU's ``lookup_symbol``: ``tables`` in load order, the newest is asked first."""
    for table in reversed(tables):
        name = table.lookup(addr)
        if name:
            return name
    return ""
