"""The Python example of docs/debugging-and-scripting.md runs as written on the
default guest and prints what the text says."""

from __future__ import annotations

import re
from pathlib import Path

from vmforge.errors import VmforgeError
from vmforge.guests import default_guest
from vmforge.testing.docs import run_doc_example
from vmforge.testing.oracles import oracle_missing

DOC = Path(__file__).resolve().parents[2] / "docs" / "debugging-and-scripting.md"


def test_the_hooks_example_runs(tmp_path: Path) -> None:
    try:
        default_guest()
    except VmforgeError as exc:
        oracle_missing(f"the default guest: {exc}")
    proc = run_doc_example(DOC, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^illegal 0x[0-9a-f]{8} at 0x8000[0-9a-f]{4} in privilege 3$",
                     proc.stdout, re.M), proc.stdout
    calls = re.search(r"kmem_cache_alloc: (\d+) calls", proc.stdout)
    assert calls and int(calls.group(1)) > 1000, proc.stdout
    assert "OpenSBI v1" in proc.stdout
