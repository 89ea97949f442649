"""Fixtures of the QMP tests; the helpers are in ``qmpkit.py``."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for UNIX sockets (their paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="vmf-qmp-") as name:
        yield Path(name)
