"""Shared helpers for vmforge's benchmarks."""

from __future__ import annotations

import pytest


def report_rate(benchmark, count: int, unit: str = "accesses") -> None:
    """Record ``count / mean time`` as ``<unit>_per_s`` in the benchmark's extra info."""
    stats = getattr(benchmark, "stats", None)
    if stats is None or not getattr(stats, "stats", None):
        return  # --benchmark-disable: ran once, nothing measured
    mean = stats.stats.mean
    benchmark.extra_info[f"{unit}_per_s"] = round(count / mean) if mean else None


@pytest.fixture
def rate(benchmark):
    """``rate(count)`` after ``benchmark(...)`` records a per-second figure."""
    return lambda count, unit="accesses": report_rate(benchmark, count, unit)
