"""The vhdx format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

__all__ = ["FILE_SIGNATURE", "probe"]

FILE_SIGNATURE = b"vhdxfile"


def probe(header: bytes, filename: str) -> int:
    return 100 if header[:8] == FILE_SIGNATURE else 0
