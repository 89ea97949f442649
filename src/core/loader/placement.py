"""Where a boot loader puts things in guest RAM, checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence

from vmforge.loader import LoaderError, _read_file
from vmforge.loader.e820 import E820Entry, place_high
from vmforge.memory import GuestMemory

__all__ = ["Placement"]


class Placement:
    """The ranges a loader has taken so far; :meth:`add` refuses (with a
    :class:`LoaderError` naming ``name``) a range outside RAM or overlapping one
    already taken."""

    def __init__(self, mem: GuestMemory) -> None:
        self.mem = mem
        self.taken: list[tuple[str, int, int]] = []      # (what, addr, size)

    def reserve(self, what: str, addr: int, size: int) -> None:
        """Take a range already checked (e.g. the ELF segments ``load_elf`` placed)."""
        self.taken.append((what, addr, size))

    def add(self, name: str, what: str, addr: int, size: int) -> None:
        if not self.mem.check_range(addr, size):
            raise LoaderError(name, f"{what} ({size} bytes at {addr:#x}) is not inside guest RAM")
        for other, a, n in self.taken:
            if addr < a + n and a < addr + size:
                raise LoaderError(name, f"{what} [{addr:#x}, {addr + size:#x}) overlaps {other} "
                                  f"[{a:#x}, {a + n:#x})")
        self.taken.append((what, addr, size))

    def add_initrd(self, path: str, e820: Sequence[E820Entry], *, last_byte: int,
                   above: int) -> tuple[int, bytes]:
        """Read the initrd ``path`` and take the place QEMU would give it
        (:func:`~vmforge.loader.e820.place_high`) at or above ``above`` (the end of the
        kernel, rounded up to a page) and not past ``last_byte``; returns
        (address, contents)."""
        blob = _read_file(path)
        above = (above + 0xFFF) & ~0xFFF
        at = place_high(e820, len(blob), last_byte=last_byte, above=above)
        if at is None:
            raise LoaderError(path, f"{len(blob)} bytes do not fit in a RAM range of the memory "
                              f"map between the kernel's end {above:#x} and {last_byte:#x}")
        self.add(path, "the initrd", at, len(blob))
        return at, blob
