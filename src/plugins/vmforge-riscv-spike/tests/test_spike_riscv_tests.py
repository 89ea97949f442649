"""The RISC-V community's ISA tests (riscv-tests), when a built copy is at hand.

Set ``VMFORGE_RISCV_TESTS`` to the ``isa`` directory of a riscv-tests build
(``make -C isa XLEN=64``); every ``rv64*-p-*`` and ``rv64*-v-*`` ELF there runs
unchanged on the spike machine, interpreted and compiled, and must exit with
status 0, as on spike.
The suite is not in Debian and nothing here fetches it, so without the variable
this module is not collected at all (see conftest.py): an opt-in, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge_riscv_spike import Spike

ISA_DIR = os.environ.get("VMFORGE_RISCV_TESTS")

def _tests() -> list[str]:
    if not ISA_DIR:
        return []
    return sorted(p.name for p in Path(ISA_DIR).glob("rv64*-[pv]-*") if p.suffix == "")


@pytest.mark.parametrize("compiled", [False, True], ids=["interpreter", "compiled"])
@pytest.mark.parametrize("name", _tests())
def test_isa(name: str, compiled: bool, monkeypatch) -> None:
    """Interpreted, and compiled from the first taken jump on (the default waits for
    the 128th, which these short programs seldom reach)."""
    from vmforge._fast.riscv import _jit_set_hot

    monkeypatch.setenv("VMFORGE_JIT", "1" if compiled else "0")
    old = _jit_set_hot(1)
    try:
        m = Spike(MachineConfig(machine="spike", bios="none", kernel=str(Path(ISA_DIR) / name),
                                serial=[BufferChar()]))
        status = m.run(timeout=30)
    finally:
        _jit_set_hot(old)
    regions = m.cpus[0]._stats()["jit_regions"]
    assert status == 0, f"{name} failed test case {status} ({regions} regions compiled)"
    assert compiled or regions == 0
