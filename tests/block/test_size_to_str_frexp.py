"""``size_to_str`` finds qemu's unit without math.frexp (math is a shared library to
load at start-up): the same text as the frexp formula for every size."""

from __future__ import annotations

import math
import random

from vmforge.cli.img_common import size_to_str


def _with_frexp(value: int) -> str:
    _, exp = math.frexp(value / (1000.0 / 1024.0))
    i = min(max(0, int((exp - 1) / 10)), 6)
    return f"{value / (1 << (10 * i)):0.3g} {('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[i]}B"


def test_size_to_str_as_with_frexp() -> None:
    rng = random.Random(5)
    values = [0, 1, 2, 999, 1000, 1023, 1024, 1025, (1 << 63) - 1, 1 << 62]
    for bits in range(64):
        base = 1 << bits
        values += [base - 1, base, base + 1, base * 1000 // 1024, base * 1000 // 1024 + 1,
                   rng.randrange(base, base * 2)]
    for value in values:
        assert size_to_str(value) == _with_frexp(value), value
