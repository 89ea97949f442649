"""``mapped.entry_runs`` (qed's and vmdk's tables a run at a time) against the same
table walked cluster by cluster and merged by ``merge_extents``."""

from __future__ import annotations

import random

from vmforge.block.mapped import (
    _RUN_STATUS,
    STORED,
    UNALLOCATED,
    ZEROS,
    entry_runs,
    merge_extents,
)

CS = 4096


def _kind(i: int, entry: int) -> int:
    return UNALLOCATED if entry == 0 else ZEROS if entry == 1 else STORED


def test_entry_runs_agree_with_cluster_by_cluster() -> None:
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randrange(1, 40)
        step = rng.choice([1, 8])
        entries, nxt = [], 100
        for _ in range(n):
            r = rng.random()
            if r < 0.2:
                entries.append(0)
            elif r < 0.35:
                entries.append(1)
            else:
                if rng.random() < 0.3:
                    nxt += step * rng.randrange(2, 5)   # a gap in the file
                entries.append(nxt)
                nxt += step
        first = rng.randrange(0, 50)
        lo = first * CS + rng.randrange(CS)
        hi = rng.randrange(lo + 1, (first + n) * CS + 1)
        entries = entries[:(hi - 1) // CS - first + 1]   # the clusters [lo, hi) touches
        unit = CS // step          # (a stored cluster's entries step by its size)
        runs = entry_runs(entries, first, lo, hi, CS, _kind, step, unit)
        one_by_one = []
        for k, e in enumerate(entries):
            a, b = max((first + k) * CS, lo), min((first + k + 1) * CS, hi)
            if a >= b:
                continue
            kind = _kind(first + k, e)
            host = e * unit + a - (first + k) * CS if kind == STORED else None
            one_by_one.append((a, b - a, _RUN_STATUS[kind], host))
        assert list(merge_extents(runs, "f")) == list(merge_extents(one_by_one, "f"))
        assert sum(r[1] for r in runs) == hi - lo


def test_stored_below_gives_the_same_runs_with_fewer_kind_calls() -> None:
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randrange(1, 60)
        entries, nxt = [], 100
        for _ in range(n):
            r = rng.random()
            if r < 0.15:
                entries.append(rng.choice((0, 1)))
            else:
                if rng.random() < 0.2:
                    nxt += rng.randrange(2, 5)     # a gap in the file
                entries.append(nxt)
                nxt += 1
        bound = rng.randrange(100, nxt + 2)

        def kind(i: int, entry: int, calls: list[int], bound: int = bound) -> int:
            calls.append(entry)
            if entry >= bound:
                raise ValueError(f"entry {entry} of cluster {i} is past the end")
            return _kind(i, entry)

        lo, hi = 0, n * CS
        results = []
        for below in (None, bound):
            calls: list[int] = []
            try:
                got: object = entry_runs(entries, 0, lo, hi, CS,
                                         lambda i, e, c=calls: kind(i, e, c), 1, CS, below)
            except ValueError as exc:
                got = str(exc)                 # the same entry refused, the same words
            results.append((got, len(calls)))
        (slow, slow_calls), (fast, fast_calls) = results
        assert fast == slow
        assert fast_calls <= slow_calls


def test_stored_below_asks_once_per_run() -> None:
    calls: list[int] = []

    def kind(i: int, entry: int) -> int:
        calls.append(i)
        return _kind(i, entry)

    entries = [0] * 10 + [1] * 10 + list(range(500, 530)) + list(range(600, 610))
    runs = entry_runs(entries, 0, 0, len(entries) * CS, CS, kind, 1, CS, stored_below=10**6)
    assert [(r[0] // CS, r[1] // CS) for r in runs] == [(0, 10), (10, 10), (20, 30), (50, 10)]
    assert calls == [0, 10, 20, 50]
