"""Start-up: ``vmforge img info`` as a whole process, beside ``qemu-img info``.

Run::

    .venv/bin/python -m pytest benchmarks/bench_startup.py --benchmark-columns=mean,min,rounds

The command is the ``vmforge`` console script next to this Python (as a user
runs it; ``python -m vmforge.cli.main`` when there is none), on a small qcow2
image: ``info`` with its format probed (every installed format asked) and with
``-f qcow2``, ``check``, ``map`` and ``compare`` (other sub-commands: each imports
its own module), ``info`` with the hooks plugins blocked (``-p no:DIST``: no
pluggy, whose import brings typing and inspect), ``create`` of a qcow2 and
``convert`` of the image to raw, and ``vmforge --version``, the floor of any
command; and ``info`` of an image of each other format qemu-img creates.  An
editable install pays its ``.pth`` finders' cost in ``site`` at every start; a
regular install does not (RESULTS.md reports both).  ``VMFORGE_BENCH_ROUNDS`` sets the
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

#: name -> (vmforge's arguments, qemu-img's, what both print; None: no image argument)
COMMANDS: dict[str, tuple[list[str], list[str], bytes | None]] = {
    "info": (["img", "info"], ["info"], b"file format: qcow2"),
    "info -f qcow2": (["img", "info", "-f", "qcow2"], ["info", "-f", "qcow2"],
                      b"file format: qcow2"),
    "check": (["img", "check"], ["check"], b"No errors were found on the image."),
    "map": (["img", "map"], ["map"], b"Offset          Length"),
    "--version": (["--version"], ["--version"], None),
    "create": (["img", "create", "-q", "-f", "qcow2"], ["create", "-q", "-f", "qcow2"], b""),
    "convert -O raw": (["img", "convert", "-O", "raw"], ["convert", "-O", "raw"], b""),
    "compare": (["img", "compare"], ["compare"], b"Images are identical."),
}
#: the formats whose ``info`` is measured too (images made by qemu-img)
FORMATS = ("qed", "vmdk", "vhdx", "vdi", "vpc", "parallels", "qcow", "raw")
#: commands also run with every hooks plugin blocked (vmforge only)
WITHOUT_HOOKS = ("info",)


@pytest.fixture(scope="module")
def qcow2_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("startup") / "small.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return str(path)


def _without_hooks() -> list[str]:
    from vmforge.plugins import Registry

    return [arg for e in Registry().entries("hooks") for arg in ("-p", f"no:{e.dist}")]


#: (command, tool) pairs measured: every command on vmforge and qemu-img, the
#: WITHOUT_HOOKS ones also on vmforge with its hooks plugins blocked
CASES = [(command, tool) for command in COMMANDS
         for tool in ("vmforge", "vmforge without hooks plugins", "qemu-img")
         if tool != "vmforge without hooks plugins" or command in WITHOUT_HOOKS]


@pytest.mark.parametrize(("command", "tool"), CASES)
def test_startup(benchmark, request, compiled, qcow2_image: str, tmp_path, tool: str,
                 command: str) -> None:
    ours, theirs, expected = COMMANDS[command]
    if tool == "qemu-img":
        argv = [QEMU_IMG, *theirs]
    elif tool == "vmforge":
        argv = [*VMFORGE, *ours]
    else:
        argv = [*VMFORGE, *_without_hooks(), *ours]
    if command == "create":
        argv += [str(tmp_path / "new.qcow2"), "64M"]
    elif command.startswith("convert"):
        argv += [qcow2_image, str(tmp_path / "out.raw")]
    elif command == "compare":
        argv += [qcow2_image, qcow2_image]
    elif expected is not None:
        argv.append(qcow2_image)
    rounds = 1 if request.config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "20"))
    benchmark.group = f"start-up: {command}"
    out = benchmark.pedantic(lambda: subprocess.run(argv, check=True, capture_output=True),
                             rounds=rounds, iterations=1, warmup_rounds=1)
    if expected is not None:
        assert expected in out.stdout


@pytest.mark.parametrize("tool", ["vmforge", "qemu-img"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_info_startup_per_format(benchmark, request, compiled, tmp_path, tool: str,
                                 fmt: str) -> None:
    """``info`` (format probed) of a 64 MiB image of each format qemu-img creates."""
    pytest.importorskip(f"vmforge_{fmt}")
    path = str(tmp_path / f"small.{fmt}")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", fmt, path, "64M"], check=True)
    argv = [QEMU_IMG, "info", path] if tool == "qemu-img" else [*VMFORGE, "img", "info", path]
    rounds = 1 if request.config.getoption("benchmark_disable", False) else int(
        os.environ.get("VMFORGE_BENCH_ROUNDS", "20"))
    benchmark.group = f"start-up: info of a {fmt} image"
    out = benchmark.pedantic(lambda: subprocess.run(argv, check=True, capture_output=True),
                             rounds=rounds, iterations=1, warmup_rounds=1)
    assert f"file format: {fmt}".encode() in out.stdout
