"""The op table (``tools/gen_riscv_ops.py`` -> ``src/_fast/riscv_ops.pxi``): the
generated file is current, the built module carries the same rows, and the rows
keep the rules the compiled tier relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge._fast.riscv import _op_table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gen_riscv_ops  # noqa: E402


def test_generated_pxi_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_riscv_ops.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_built_module_has_the_tables_rows():
    built = _op_table()
    want = {name: gen_riscv_ops.flag_bits(spec) for name, spec, _, _ in gen_riscv_ops.OPS}
    assert built == want


def _props(name: str) -> set[str]:
    bits = _op_table()[name]
    return {f for i, f in enumerate(gen_riscv_ops.FLAGS) if bits >> i & 1}


@pytest.mark.parametrize("name", [n for n, _, _, _ in gen_riscv_ops.OPS])
def test_row_is_consistent(name):
    """Rules the compiled tier relies on: what it compiles is exactly the alu ops,
    loads, stores, branches, jal, j and jalr; a jump or branch reads no memory; an
    op in exec_slow's groups is a slow one."""
    p = _props(name)
    assert ("jit" in p) == bool(p & {"alu", "load", "store", "branch", "jump"}) or \
        name == "JALR", p
    assert not (p & {"branch", "jump"} and p & {"load", "store"}), p
    assert not (p & {"csr", "amo"}) or "slow" in p, p
    assert not ("load" in p and "store" in p), p
    assert not ("ends" in p and "branch" in p), p


def test_table_has_no_unknown_property():
    with pytest.raises(SystemExit, match="unknown property"):
        gen_riscv_ops.flag_bits("rs1 writes_memory")


def test_run_loop_sends_exactly_the_slow_ops_to_exec_slow():
    """The interpreter's hot switch lists the ops it hands to exec_slow (equality
    tests, so that it stays a C switch): that list is the table's slow rows."""
    src = (ROOT / "src" / "_fast" / "riscv.pyx").read_text()
    start = src.index("elif (op == OP_ILLEGAL")
    cond = src[start:src.index("):", start)]
    listed = set(re.findall(r"op == OP_(\w+)", cond))
    slow = {name for name, spec, _, _ in gen_riscv_ops.OPS if "slow" in spec.split()}
    assert listed == slow


def test_x86_forms_are_alu_ops():
    """A row's x86 form (how emit_simple compiles it) is only for compiled alu ops
    reading what the form reads (rs2 for alu3/shiftr/slt)."""
    for name, spec, _, x86 in gen_riscv_ops.OPS:
        form, _, _ = gen_riscv_ops.x86_form(name, x86)
        if form == "own":
            continue
        p = set(spec.split())
        assert {"alu", "jit", "rs1", "rd"} <= p, name
        assert ("rs2" in p) == (form in ("alu3", "shiftr", "slt")), name
    with pytest.raises(SystemExit, match="bad x86 form"):
        gen_riscv_ops.x86_form("ADD", "alu4 1 X_ADD")
