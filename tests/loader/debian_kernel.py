"""Debian's own x86-64 kernel, as ``guests/build.py linux-amd64`` unpacks it
(``make guests``): a missing product skips the test, or fails it in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmforge.testing.oracles import oracle_missing

ROOT = Path(__file__).resolve().parents[2]


def debian_kernel_file(name: str) -> Path:
    """``vmlinuz`` (the bzImage) or ``vmlinux`` (the PVH ELF) of the product."""
    out = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-dir",
                          "linux-amd64"], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    path = Path(lines[-1]) / name if lines else None
    if out.returncode != 0 or path is None or not path.is_file():
        oracle_missing("Debian's kernel is not unpacked (python3 guests/build.py linux-amd64)")
    return path
