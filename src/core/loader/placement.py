"""Where a boot loader puts things in guest RAM, checked before anything is written."""

from __future__ import annotations

from vmforge.loader import LoaderError
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
