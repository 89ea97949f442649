"""Shared helpers for vmforge's benchmarks."""

from __future__ import annotations

import compileall
import importlib.util
import os

import pytest


def byte_compile() -> None:
    """Write the bytecode of vmforge and its plugins, as installing a wheel does.

    Benchmarks that start ``vmforge`` as a process then measure the tool as
    installed, not a recompile of its sources on every start (which is what an
    editable install does under ``PYTHONDONTWRITEBYTECODE``)."""
    import importlib_metadata

    roots = {"vmforge"}
    for ep in importlib_metadata.entry_points():
        if ep.group.startswith("vmforge."):
            roots.add(ep.value.split(":")[0].split(".")[0])
    for name in sorted(roots):
        spec = importlib.util.find_spec(name)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            if os.access(loc, os.W_OK):
                compileall.compile_dir(loc, quiet=1)


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


@pytest.fixture(scope="session")
def compiled() -> None:
    """Byte-compile vmforge before timing it as a process (see ``byte_compile``)."""
    byte_compile()
