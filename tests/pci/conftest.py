"""Fixtures of the PCI tests: a rig with a QEMU-7.2-virt-like host bridge, and QEMU
itself as the oracle for configuration spaces and the device tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the shared pieces (pcikit.py) are a plain module next to the tests
sys.path.insert(0, str(Path(__file__).parent))

from pcikit import Qemu, Rig, make_rig

from vmforge.testing.oracles import require_program


@pytest.fixture
def rig() -> Rig:
    r = make_rig()
    yield r
    r.host.unrealize()


@pytest.fixture
def msi_rig() -> Rig:
    r = make_rig(msi=True)
    yield r
    r.host.unrealize()


@pytest.fixture
def qemu(tmp_path) -> Qemu:
    return Qemu(require_program("qemu-system-riscv64", "qemu-system-misc"), tmp_path)
