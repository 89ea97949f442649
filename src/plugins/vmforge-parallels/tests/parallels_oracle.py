"""Helpers for the parallels tests: qemu-img / qemu-io as the oracle, the vmforge CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from vmforge.testing.oracles import needs

needs_qemu = needs("qemu-img", "qemu-io", package="qemu-utils")  # skips, or fails in CI


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("qemu-img", *args, check=check)


def vmforge_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "vmforge.cli.main", "img", *args, check=check)


def qemu_io(path: str | Path, *cmds: str, fmt: str = "parallels") -> str:
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    p = run(*args, str(path))
    assert "error" not in p.stdout.lower() and "fail" not in p.stdout.lower(), p.stdout
    return p.stdout


def info_json(tool: str, path: str | Path, fmt: str) -> dict:
    fn = qemu_img if tool == "qemu-img" else vmforge_img
    return json.loads(fn("info", "--output", "json", "-f", fmt, str(path)).stdout)


def to_raw(path: str | Path, out: str | Path, fmt: str = "parallels") -> bytes:
    qemu_img("convert", "-f", fmt, "-O", "raw", str(path), str(out))
    return Path(out).read_bytes()


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)
