"""VMFORGE_JIT_EXITS=1 counts compiled code's ways out by why
(riscv_jit_stats.pxi) and writes them to stderr when the process exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _run(env_on: bool) -> str:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            "import test_riscv_jit_refill as t; t._run(cross=True)")
    env = dict(os.environ)
    env.pop("VMFORGE_JIT_EXITS", None)
    if env_on:
        env["VMFORGE_JIT_EXITS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stderr


def test_ways_out_are_counted_by_why():
    err = _run(True)
    lines = dict(reversed(line.split(None, 1)) for line in err.splitlines()[1:])
    # every crossing load of the loop once it is compiled leaves by its slow path
    assert int(lines["load slow path"]) >= 512 * 5, err
    assert err.startswith("vmforge: compiled code's ways out: "), err


def test_nothing_is_counted_without_the_variable():
    assert "ways out" not in _run(False)
