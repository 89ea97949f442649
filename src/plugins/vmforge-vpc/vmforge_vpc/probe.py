"""The vpc format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

__all__ = ["COOKIE", "probe"]

COOKIE = b"conectix"


def probe(header: bytes, filename: str) -> int:
    # as QEMU: only a footer copy at the start (dynamic images) is recognised;
    # a fixed image is a raw disk with a footer at its end
    return 100 if header[:8] == COOKIE else 0
