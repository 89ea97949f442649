"""Exceptions shared by every layer of vmforge (plugins may import them)."""

from __future__ import annotations


class VmforgeError(Exception):
    """Base of every error vmforge raises on purpose."""


class GuestMemoryError(VmforgeError):
    """A guest-memory access touched an address that is not RAM.

    ``completed`` bytes were moved before the first unmapped byte, of the
    ``expected`` the caller asked for (rust-vmm's ``PartialBuffer``).
    """

    def __init__(self, addr: int, expected: int, completed: int, what: str = "access") -> None:
        self.addr = addr
        self.expected = expected
        self.completed = completed
        super().__init__(
            f"guest memory {what} of {expected} bytes at {addr:#x} stopped after "
            f"{completed} bytes: {addr + completed:#x} is not RAM"
        )


class GuestAddressError(VmforgeError, ValueError):
    """A guest address or an address computation outside [0, 2**64)."""
