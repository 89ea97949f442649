"""Fixtures of the virtio tests: guest memory, a small echo device, a driver."""

from __future__ import annotations

import pytest

from vmforge.testing.virtio_driver import GuestAllocator
from vmforge.testing.virtio_kit import ALL_RING_MODES, RAM, RAM_SIZE, guest_memory, make


@pytest.fixture
def memory():
    return guest_memory()


@pytest.fixture
def alloc() -> GuestAllocator:
    return GuestAllocator(RAM, RAM_SIZE)


@pytest.fixture
def echo(memory, alloc):
    """(device, transport, driver, queue drivers) on split rings with every feature."""
    return make(memory, alloc)


@pytest.fixture(params=sorted(ALL_RING_MODES))
def any_ring(request, memory, alloc):
    return make(memory, alloc, **ALL_RING_MODES[request.param])
