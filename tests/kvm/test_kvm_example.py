"""The example of ``vmforge.accel.kvm``'s docstring runs as written."""

from __future__ import annotations

import contextlib
import io

import vmforge.accel.kvm as kvm_module


def test_the_module_example_runs():
    doc = kvm_module.__doc__ or ""
    block = doc.split("natively)::\n\n", 1)[1].split("\n\n``run``", 1)[0]
    code = "\n".join(line[4:] for line in block.splitlines())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "vmforge.accel.kvm example", "exec"), {})
    assert out.getvalue() == "out 0x10 <- 0x42\n0x10000000 <- 0x1234\n"
