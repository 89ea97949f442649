"""The cloop format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

__all__ = ["MAGIC", "probe"]

MAGIC = (b"#!/bin/sh\n#V2.0 Format\n"
         b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def probe(header: bytes, filename: str) -> int:
    # a low score, as QEMU: the magic is a shell script's first lines
    n = min(len(MAGIC), len(header))
    return 2 if n and header[:n] == MAGIC[:n] else 0
