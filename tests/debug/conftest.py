"""Fixtures of the gdbstub tests; the helpers are in ``gdbkit.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gdbkit import Vm, make_vm, stop_vm


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Vm]:
    v = make_vm(tmp_path)
    yield v
    stop_vm(v)


