"""Deterministic test images for format authors, tests and benchmarks."""

from __future__ import annotations

import random

__all__ = ["MiB", "mixed_bytes", "write_mixed"]

MiB = 1 << 20
_TEXT = b"The quick brown fox jumps over the lazy dog. vmforge block layer test.\n"


def mixed_bytes(size: int, seed: int = 7, piece: int = 65536) -> bytes:
    """Random, zero and text regions of ``piece`` bytes, in a seeded order."""
    rng = random.Random(seed)
    data = bytearray(size)
    for off in range(0, size, piece):
        n = min(piece, size - off)
        kind = rng.randrange(3)
        if kind == 0:
            data[off:off + n] = rng.randbytes(n)
        elif kind == 1:
            data[off:off + n] = (_TEXT * (n // len(_TEXT) + 1))[:n]
    return bytes(data)


def write_mixed(path: str, size: int, seed: int = 7, piece: int = 65536) -> bytes:
    """Write :func:`mixed_bytes` as a sparse raw file (zero pieces are holes)."""
    data = mixed_bytes(size, seed, piece)
    zero = bytes(piece)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, piece):
            chunk = data[off:off + piece]
            if chunk != zero[:len(chunk)]:
                f.seek(off)
                f.write(chunk)
    return data
