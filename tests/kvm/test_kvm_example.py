"""The KVM layer's example in the README runs as written."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_runs():
    text = README.read_text()
    section = text.split("### The KVM layer\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "vmforge.accel.kvm example", "exec"), {})
    assert out.getvalue() == "out 0x10 <- 0x42\n0x10000000 <- 0x1234\n"
