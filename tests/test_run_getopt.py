"""``vmforge run``'s command lines read without argparse (vmforge.cli.run_getopt) give
the namespace argparse gives, or are left to argparse (help, errors, odd forms)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.cli.main import _read_globals, _run_args, build_parser
from vmforge.cli.run import add_run_arguments
from vmforge.cli.run_getopt import PluginSpec, read


def _argparse(argv: list[str]) -> dict | None:
    """What argparse (the full parser, with the installed hooks plugins' options) makes
    of ``vmforge ARGV``; None on an error or help (it exits)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(build_parser("run").parse_args(argv))
        except SystemExit:
            return None


def _check(argv: list[str]) -> bool:
    """The fast reading of ``vmforge ARGV`` is argparse's, or none; True when it read it."""
    known = _read_globals(argv)
    assert known is not None and known.command == "run"
    fast = _run_args(known)
    slow = _argparse(argv)
    if fast is None:
        return False
    assert slow is not None, argv
    assert vars(fast) == slow, argv
    return True


#: command lines read without argparse: the common ones
COMMON = [
    ["run"], ["-v", "run", "-nographic"], ["-p", "no:x", "run", "-M", "virt"],
    ["run", "-M", "riscv-virt", "-m", "256M", "-kernel", "Image", "-initrd", "rd", "-append",
     "console=ttyS0 root=/dev/vda", "-nographic"],
    ["run", "-machine", "riscv-virt,aclint=on", "-smp", "2", "-bios", "none", "-kernel", "k",
     "--timeout", "0"],
    ["run", "-drive", "file=a,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
     "-drive", "file=b", "-netdev", "user,id=n", "-device", "virtio-net-device,netdev=n"],
    ["run", "-serial", "stdio", "-serial", "null", "-chardev", "null,id=c", "-d", "int",
     "-d", "in_asm", "-D", "log", "-icount", "shift=2,sleep=off", "-accel", "interp"],
    ["run", "-append", "", "-s", "-S", "-gdb", "tcp::1234", "-no-reboot", "-enable-kvm"],
    ["run", "-hda", "disk.qcow2", "-nic", "user", "-global", "x.y=1", "-cpu", "host",
     "-qmp", "unix:/q,server=on,wait=off", "-loadvm", "s", "-incoming", "defer"],
    ["run", "-m", "1G", "-m", "2G"],
]

#: command lines left to argparse: help, errors, and forms it reads its own way
ARGPARSE = [
    ["run", "-h"], ["run", "--help"], ["run", "-M"], ["run", "-kernel", "-initrd", "x"],
    ["run", "operand"], ["run", "--", "-M"], ["run", "-nosuch"], ["run", "--time", "0"],
    ["run", "--timeout=0"], ["run", "-m256M"], ["run", "-kernel=K"], ["run", "-v"],
    ["run", "-append", "-quiet"], ["run", "-append", "-a b"], ["run", "-nographic=1"],
    ["--version", "run"],
]


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_common_command_lines_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    assert _check(argv)


@pytest.mark.parametrize("argv", ARGPARSE, ids=" ".join)
def test_other_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    assert not _check(argv)


def test_a_plugin_asking_for_more_than_add_argument_gets_argparse() -> None:
    spec = PluginSpec()
    add_run_arguments(spec)
    assert read(spec, ["-M", "x"]) is not None
    spec.add_argument("--new", action="store_true")
    assert read(spec, ["--new"])["new"] is True  # type: ignore[index]
    group = spec.add_argument_group("mine")      # argparse's, not the spec's
    group.add_argument("--other")
    assert not spec.supported and read(spec, ["-M", "x"]) is None
    custom = PluginSpec()
    custom.add_argument("--x", action="extend")  # an action the reader does not take
    assert read(custom, []) is None
    with pytest.raises(AttributeError):
        PluginSpec().__wrapped__  # noqa: B018


def test_run_reads_its_command_line_without_argparse(tmp_path: Path) -> None:
    """``vmforge run`` with a common command line imports neither argparse nor
    gettext; --help and errors are argparse's as before."""
    pytest.importorskip("vmforge_riscv_virt")
    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(4096))
    code = ("import sys\nfrom vmforge.cli.main import main\nstatus = main(sys.argv[1:])\n"
            "print(status, sorted(m for m in ('argparse', 'gettext', 'vmforge.cli.parsers')"
            " if m in sys.modules), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code, "run", "-M", "riscv-virt", "-m", "64M",
                          "-bios", "none", "-kernel", str(kernel), "-nographic",
                          "--timeout", "0"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.stderr.splitlines()[-1] == "124 []", out.stderr
    helped = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "-kernel FILE" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-kernel"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == ("vmforge run: error: argument -kernel: expected "
                                           "one argument")
