"""Start-up: ``vmforge img info`` as a whole process, beside ``qemu-img info``.

Run::

    .venv/bin/python -m pytest benchmarks/bench_startup.py --benchmark-columns=mean,min,rounds

The command is the ``vmforge`` console script next to this Python (as a user
runs it; ``python -m vmforge.cli.main`` when there is none), on a small qcow2
image: once with its format probed (every installed format asked), once with
``-f qcow2``, and ``vmforge --version``, the floor of any command.  An editable
install pays its ``.pth`` finders' cost in ``site`` at every start; a regular
install does not (RESULTS.md reports both).  ``VMFORGE_BENCH_ROUNDS`` sets the
rounds (default 20).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.testing.oracles import needs

pytestmark = needs("qemu-img", package="qemu-utils")

QEMU_IMG = shutil.which("qemu-img") or "qemu-img"
_SCRIPT = Path(sys.executable).parent / "vmforge"
VMFORGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "vmforge.cli.main"]

COMMANDS = {
    "info": (["img", "info"], ["info"]),
    "info -f qcow2": (["img", "info", "-f", "qcow2"], ["info", "-f", "qcow2"]),
    "--version": (["--version"], ["--version"]),
}


@pytest.fixture(scope="module")
def qcow2_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("startup") / "small.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return str(path)


@pytest.mark.parametrize("tool", ["vmforge", "qemu-img"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_startup(benchmark, request, compiled, qcow2_image: str, tool: str, command: str) -> None:
    ours, theirs = COMMANDS[command]
    argv = [*VMFORGE, *ours] if tool == "vmforge" else [QEMU_IMG, *theirs]
    if command != "--version":
        argv.append(qcow2_image)
    rounds = 1 if request.config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "20"))
    benchmark.group = f"start-up: {command}"
    out = benchmark.pedantic(lambda: subprocess.run(argv, check=True, capture_output=True),
                             rounds=rounds, iterations=1, warmup_rounds=1)
    if command != "--version":
        assert b"file format: qcow2" in out.stdout
