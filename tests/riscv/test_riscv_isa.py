"""Instruction classes of the RV64GC hart, each checked by its own test program."""

import pytest

PROGRAMS = ["rv64i", "rv64m", "rv64a", "rvc", "priv", "vm", "fp", "cprog"]


@pytest.mark.parametrize("name", PROGRAMS)
def test_program(run_prog, name):
    run_prog(name)
