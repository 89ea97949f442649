"""The ``vmforge`` console script (:func:`vmforge.cli.main.entry`).

It starts without the cyclic garbage collector (``_start_startup_gc``): the command
itself runs with it on, the objects start-up made frozen, and cycles made before and
during the command are still collected (an image closed by its ``__del__``).

It ends an ``img`` command without finalizing the interpreter (as qemu-img exits at
once), having done first what finalization does that matters: cycles collected,
``atexit`` functions run, output flushed; and the normal way for other commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: what both scripts start with: an object that says when it is freed
NOISY = """
import atexit, gc, sys
from vmforge.cli import img_report, main

class Noisy:
    def __init__(self, word):
        self.word = word
    def __del__(self):
        sys.stderr.write(self.word + "\\n")
"""

QUICK_EXIT = NOISY + """
main.KEPT = Noisy("finalized")            # freed only by the interpreter's finalization
cycle = Noisy("cycle closed")
cycle.me = cycle                          # freed only by a collection
del cycle
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
sys.stdout.write("unflushed output ")     # buffered: it must still come out
sys.argv = ["vmforge", *sys.argv[1:]]
main.entry()
"""

STARTUP_GC = NOISY + """
before = Noisy("cycle made before closed")
before.me = before
del before

real_info = img_report.cmd_info

def cmd_info(args):
    sys.stderr.write(f"command: enabled={gc.isenabled()} frozen={gc.get_freeze_count() > 0}\\n")
    during = Noisy("cycle made by the command closed")
    during.me = during
    return real_info(args)

img_report.cmd_info = cmd_info
atexit.register(lambda: sys.stderr.write(f"exit: enabled={gc.isenabled()}\\n"))
sys.argv = ["vmforge", *sys.argv[1:]]
main.entry()
"""


def _run(tmp_path: Path, script: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.raw"
    path.write_bytes(bytes(1 << 20))
    return path


def test_img_skips_finalization_but_not_what_matters(tmp_path: Path, image: Path) -> None:
    out = _run(tmp_path, QUICK_EXIT, "img", "info", "-f", "raw", str(image))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("unflushed output image: ")
    assert "virtual size: 1 MiB" in out.stdout
    assert "cycle closed" in out.stderr and "atexit ran" in out.stderr
    assert "finalized" not in out.stderr


def test_img_status_is_kept(tmp_path: Path) -> None:
    out = _run(tmp_path, QUICK_EXIT, "img", "info", str(tmp_path / "missing.qcow2"))
    assert out.returncode == 1
    assert "missing.qcow2" in out.stderr
    assert "atexit ran" in out.stderr and "finalized" not in out.stderr


def test_other_commands_finalize_as_usual(tmp_path: Path) -> None:
    out = _run(tmp_path, QUICK_EXIT, "--version")
    assert out.returncode == 0
    assert "finalized" in out.stderr and "atexit ran" in out.stderr


def test_the_console_script_is_entry(tmp_path: Path) -> None:
    # (from another directory: the installed metadata, not a build's egg-info here)
    out = subprocess.run([sys.executable, "-c", "from importlib.metadata import entry_points\n"
                          "print([e.value for e in entry_points(group='console_scripts')"
                          " if e.name == 'vmforge'])"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.stdout.strip() == "['vmforge.cli.main:entry']", out.stderr


def test_the_command_runs_with_the_collector_on_and_start_up_frozen(
        tmp_path: Path, image: Path) -> None:
    out = _run(tmp_path, STARTUP_GC, "img", "info", "-f", "raw", str(image))
    assert out.returncode == 0, out.stderr
    assert "command: enabled=True frozen=True" in out.stderr
    assert "cycle made before closed" in out.stderr
    assert "cycle made by the command closed" in out.stderr
    assert "exit: enabled=True" in out.stderr


def test_the_collector_is_on_again_when_no_command_ran(tmp_path: Path) -> None:
    for argv in (["--version"], ["img", "info", "--no-such-option", "x"]):
        out = _run(tmp_path, STARTUP_GC, *argv)
        assert "exit: enabled=True" in out.stderr, (argv, out.stderr)
        assert "command:" not in out.stderr


def test_main_in_a_process_leaves_the_collector_alone(image: Path) -> None:
    script = ("import gc, sys\nfrom vmforge.cli.main import main\n"
              "status = main(['img', 'info', '-f', 'raw', sys.argv[1]])\n"
              "print(status, gc.isenabled(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", script, str(image)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "0 True 0", out.stderr
