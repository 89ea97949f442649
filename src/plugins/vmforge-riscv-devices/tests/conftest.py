"""Fixtures: a bare board (a Machine with a paused clock) and harts that record
what the interrupt controllers drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from vmforge.testing.boards import BareBoard, RecordingHart


@pytest.fixture
def board() -> Iterator[BareBoard]:
    b = BareBoard()
    yield b
    b.close()


@pytest.fixture
def new_hart() -> Callable[[], RecordingHart]:
    """Makes recording harts (a fixture: test modules cannot import conftest)."""
    return RecordingHart
