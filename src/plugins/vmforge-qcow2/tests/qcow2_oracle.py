"""Helpers for the qcow2 tests: qemu-img / qemu-io as the oracle."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from vmforge.testing.oracles import needs

needs_qemu = needs("qemu-img", "qemu-io", package="qemu-utils")  # skips, or fails in CI


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("qemu-img", *args, check=check)


def qemu_io(path: str | Path, *cmds: str, fmt: str = "qcow2") -> str:
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    p = run(*args, str(path))
    assert "error" not in p.stdout.lower() and "failed" not in p.stdout.lower(), p.stdout
    return p.stdout


def qemu_check(path: str | Path) -> dict:
    """``qemu-img check --output json`` (exit 0/2/3 are all reports)."""
    p = qemu_img("check", "--output", "json", "-f", "qcow2", str(path), check=False)
    assert p.returncode in (0, 2, 3), p.stderr
    return json.loads(p.stdout)


def assert_qemu_clean(path: str | Path) -> None:
    r = qemu_check(path)
    assert r.get("corruptions", 0) == 0 and r.get("leaks", 0) == 0, r
    assert r.get("check-errors", 0) == 0, r


def to_raw(path: str | Path, out: str | Path, snapshot: str | None = None) -> bytes:
    args = ["convert", "-f", "qcow2", "-O", "raw"]
    if snapshot is not None:
        args += ["-l", f"snapshot.name={snapshot}"]
    qemu_img(*args, str(path), str(out))
    return Path(out).read_bytes()


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)



class Crash(Exception):
    """The simulated crash: raised instead of a write past the limit."""


def count_writes(monkeypatch: pytest.MonkeyPatch, limit: int | None) -> list[int]:
    """Count the image's writes (``[n]``); with ``limit``, the write after ``limit``
    raises :class:`Crash` instead of happening (a crash at that point)."""
    from vmforge_qcow2.fileio import ImageFile

    count = [0]
    real_pwrite, real_pwritev = ImageFile.pwrite, ImageFile.pwritev

    def step() -> None:
        if limit is not None and count[0] >= limit:
            raise Crash
        count[0] += 1

    def pwrite(self, offset, data):  # type: ignore[no-untyped-def]
        step()
        real_pwrite(self, offset, data)

    def pwritev(self, offset, bufs):  # type: ignore[no-untyped-def]
        step()
        real_pwritev(self, offset, bufs)

    monkeypatch.setattr(ImageFile, "pwrite", pwrite)
    monkeypatch.setattr(ImageFile, "pwritev", pwritev)
    return count
