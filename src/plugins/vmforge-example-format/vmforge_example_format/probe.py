"""The example format's probe, in a light module of its own.

vmforge asks every installed format's probe when it guesses an image's format.
A probe named in the entry point group ``vmforge.block.probe`` (see this
plugin's ``pyproject.toml``) is called without importing the driver, so that
guessing a format costs no format's import time; keep this module free of
heavy imports.  A format without one is probed through its class's ``probe``.
"""

from __future__ import annotations

__all__ = ["MAGIC", "probe"]

MAGIC = b"VMFXMAP\0"


def probe(header: bytes, filename: str) -> int:
    """100 for an image that starts with :data:`MAGIC`, else 0."""
    return 100 if header[:8] == MAGIC else 0
