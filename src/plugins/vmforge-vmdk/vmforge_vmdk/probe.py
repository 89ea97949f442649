"""The vmdk format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

__all__ = ["MAGIC", "VMDK3_MAGIC", "probe", "probe_descriptor"]

MAGIC = b"KDMV"
VMDK3_MAGIC = b"COWD"


def probe(header: bytes, filename: str) -> int:
    """The ``KDMV`` (or ``COWD``) magic, or a descriptor file (comments, then
    ``version=N``, as QEMU's probe)."""
    if header[:4] in (MAGIC, VMDK3_MAGIC):
        return 100
    return 100 if probe_descriptor(header) else 0


def probe_descriptor(buf: bytes) -> bool:
    """QEMU's test of a descriptor file: comment and blank lines, then ``version=N``."""
    p, end = 0, len(buf)
    while p < end:
        c = buf[p:p + 1]
        if c == b"#":
            nl = buf.find(b"\n", p)
            if nl < 0:
                return False
            p = nl + 1
            continue
        if c == b" ":
            while p < end and buf[p:p + 1] == b" ":
                p += 1
            if p < end and buf[p:p + 1] == b"\r":
                p += 1
            if p == end or buf[p:p + 1] != b"\n":
                return False
            p += 1
            continue
        return any(buf.startswith(f"version={v}{nl}".encode(), p)
                   for v in (1, 2, 3) for nl in ("\n", "\r\n"))
    return False
