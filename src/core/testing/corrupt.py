"""Corrupt and fuzzed images for a format's own tests: patch, mutate, exercise.

The conformance kit mangles headers of any format blindly; a plugin knows
where its header, tables and checksums are and aims there::

    from vmforge.testing.corrupt import flip_bits, fuzz, patch_file

    def test_fuzz(tmp_path):
        seed = make_seed_image(tmp_path).read_bytes()
        hot = list(range(0, 64)) + list(range(4096, 4096 + 128))   # header, table
        rng = random.Random(5)
        outcomes = fuzz(MyFormat, seed, tmp_path / "bad.img",
                        lambda k, raw: flip_bits(raw, hot, 1 + k % 3, rng), rounds=300)
        assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes

Each mutated image must open and read, or fail with a ``BlockError``:
anything else fails the test, naming the mutation.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from vmforge.block.driver import BlockDriver, BlockError

__all__ = ["exercise", "flip_bits", "fuzz", "overwrite_fields", "patch_file"]

MiB = 1 << 20
#: how much of an image :func:`exercise` maps and reads, and how many extents at most
EXERCISE_BYTES = 8 * MiB
EXERCISE_EXTENTS = 1 << 16


def patch_file(path: str | os.PathLike[str], at: int, data: bytes) -> None:
    """Overwrite the bytes at ``at`` of the file with ``data``."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def exercise(cls: type[BlockDriver], path: str | os.PathLike[str], what: str = "") -> str:
    """Open the image read-only and use it as a reader would (``block_status`` and a
    read of its first 8 MiB, ``check``, ``info``).

    Returns ``"opened"`` when all of it worked, ``"refused"`` when the open or a use
    raised a ``BlockError``; any other exception fails the test, naming ``what``.
    """
    label = what or str(path)
    try:
        drv = cls.open(str(path), readonly=True)
    except BlockError:
        return "refused"
    except Exception as exc:
        pytest.fail(f"{label}: open raised {type(exc).__name__}: {exc}, not a BlockError")
    try:
        n = min(drv.size, EXERCISE_BYTES)
        for _ in zip(range(EXERCISE_EXTENTS), drv.block_status(0, n), strict=False):
            pass
        drv.read(0, n)
        drv.check()
        drv.info()
        return "opened"
    except BlockError:
        return "refused"
    except Exception as exc:
        pytest.fail(f"{label}: use raised {type(exc).__name__}: {exc}, not a BlockError")
    finally:
        try:
            drv.close()
        except BlockError:
            pass


def flip_bits(data: bytearray, hot: Sequence[int], count: int, rng: random.Random) -> None:
    """Flip one bit in each of ``count`` bytes drawn from the offsets ``hot``."""
    for _ in range(count):
        data[rng.choice(hot)] ^= 1 << rng.randrange(8)


def overwrite_fields(data: bytearray, count: int, span: int, rng: random.Random,
                     field: str | None, values: Callable[[], Sequence[int]]) -> None:
    """Overwrite ``count`` places in the first ``span`` bytes: with ``field`` (a
    :mod:`struct` format such as ``"<Q"``), a field there gets one of ``values()``
    (drawn when it is written) where it fits; without, or where it does not fit,
    one byte gets a random value."""
    size = struct.calcsize(field) if field else 0
    for _ in range(count):
        at = rng.randrange(span)
        if field and at + size <= span:
            data[at:at + size] = struct.pack(field, rng.choice(values()))
        else:
            data[at] = rng.randrange(256)


def fuzz(cls: type[BlockDriver], original: bytes, path: str | os.PathLike[str],
         mutate: Callable[[int, bytearray], None], rounds: int) -> dict[str, int]:
    """Write ``rounds`` mutations of ``original`` to ``path`` (``mutate(k, data)``
    changes the ``k``-th copy in place) and :func:`exercise` each.

    Returns how many ``"opened"`` and how many were ``"refused"``.
    """
    outcomes = {"opened": 0, "refused": 0}
    for k in range(rounds):
        data = bytearray(original)
        mutate(k, data)
        Path(path).write_bytes(data)
        outcomes[exercise(cls, path, f"mutation #{k}")] += 1
    return outcomes
