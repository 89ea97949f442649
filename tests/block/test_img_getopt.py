"""``vmforge img``'s command lines read without argparse (vmforge.cli.img_getopt) give
the namespace argparse gives, or are left to argparse (help, errors, odd forms)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import subprocess
import sys

import pytest

from vmforge.cli.img import parse_command_line
from vmforge.cli.img_getopt import Namespace, Spec, parse, permute
from vmforge.cli.main import _pre_parse, _read_globals, build_parser


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser("img")


def _argparse(argv: list[str]) -> dict | None:
    """What argparse (the full parser) makes of ``vmforge img ARGV``; None on an error
    or help (it exits)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(_parser().parse_args(["img", *argv]))
        except SystemExit:
            return None


def _comparable(values: dict) -> dict:
    """The values, ``func`` by what it runs (each parse makes its own closure)."""
    out = dict(values)
    func = out.pop("func")
    out["func"] = (func.__qualname__, [c.cell_contents for c in func.__closure__ or ()])
    return out


def _check(argv: list[str]) -> bool:
    """The fast reading of ``argv`` is argparse's, or none; True when it read it."""
    fast = parse_command_line(argv)
    slow = _argparse(argv)
    if fast is None:
        return False
    assert slow is not None, argv
    slow.pop("plugin_opts"), slow.pop("verbose"), slow.pop("command")
    assert _comparable(fast) == _comparable(slow), argv
    return True


#: command lines read without argparse: the common ones
COMMON = [
    ["info", "a.qcow2"], ["info", "-f", "qcow2", "a.qcow2"], ["info", "a.qcow2", "-f", "raw"],
    ["info", "--output", "json", "a"], ["info", "--output=json", "a"], ["info", "--out", "human",
                                                                         "a"],
    ["info", "-U", "--backing-chain", "a"], ["info", "-fqcow2", "a"], ["info", "-Uf", "raw", "a"],
    ["info", "--image-opts", "driver=raw,file.filename=x"], ["info", "--", "-a"],
    ["info", "--object", "secret,id=s,data=x", "--object", "secret,id=t,data=y", "a"],
    ["map", "a"], ["map", "--output", "json", "-f", "qcow2", "a"],
    ["check", "a"], ["check", "-r", "leaks", "-q", "a"], ["check", "-qr", "all", "a"],
    ["create", "-q", "-f", "qcow2", "t", "1M"], ["create", "t", "-f", "qcow2", "1G"],
    ["create", "-f", "qcow2", "-b", "a", "-F", "qcow2", "t"], ["create", "-o", "a=1",
                                                               "-o", "b=2", "t", "1M"],
    ["create", "-u", "-b", "", "-F", "raw", "t", "1M"], ["create", "t"], ["create"],
    ["convert", "-O", "raw", "a", "b"], ["convert", "a", "b", "c", "-O", "qcow2", "-c", "-p"],
    ["convert", "-m", "4", "-W", "-t", "none", "a", "b"], ["convert", "-S", "0", "-n", "a", "b"],
    ["compare", "a", "b"], ["compare", "-s", "-f", "raw", "-F", "qcow2", "a", "b"],
    ["snapshot", "-l", "a"], ["snapshot", "-c", "s1", "a"], ["measure", "-O", "qcow2", "a"],
    ["measure", "--size", "1G", "-O", "qcow2"], ["resize", "a", "+1G"], ["resize", "a", "-1G"],
    ["resize", "--shrink", "-f", "raw", "a", "1M"], ["rebase", "-u", "-b", "", "a"],
    ["commit", "-p", "a"], ["amend", "-o", "compat=1.1", "a"], ["dd", "if=a", "of=b", "bs=1M"],
    ["dd", "-O", "qcow2"],
]

#: command lines left to argparse: help, errors, and forms it reads its own way
LEFT = [
    [], ["nosuch", "a"], ["--qemu-img-compat", "info", "a"], ["info"], ["info", "a", "b"],
    ["info", "-h"], ["info", "--help"], ["info", "--he"], ["info", "-x", "a"],
    ["info", "--o", "json", "a"], ["info", "--output", "xml", "a"], ["info", "-f"],
    ["info", "-f", "-U", "a"], ["info", "-f=raw", "a"], ["info", "--image-opts=", "a"],
    ["info", "-Ux", "a"], ["info", "--", "--", "a"], ["check", "-r", "some", "a"],
    ["convert"], ["convert", "-m", "x", "a", "b"], ["create", "t", "1M", "x"],
    ["resize", "a"], ["compare", "a"], ["info", "--backing-chain=1", "a"],
    ["bitmap", "--add", "a", "b"], ["info", "-o=x", "a"],
]


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_common_command_lines_read_as_argparse_reads_them(argv: list[str]) -> None:
    assert _check(argv)


@pytest.mark.parametrize("argv", LEFT, ids=" ".join)
def test_other_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    assert not _check(argv)


def test_every_combination_of_a_few_words() -> None:
    """Up to four words from a pool, after each sub-command: whatever the fast reader
    takes, argparse reads the same."""
    pool = ["a", "b", "-f", "qcow2", "-U", "-q", "--output", "json", "--", "-p", "-Uq",
            "--object", "-", "", "-1G", "--force-share", "-o", "x=1", "-c", "-l"]
    read = 0
    for command in ("info", "create", "convert", "check", "resize", "snapshot", "measure"):
        for n in range(5):
            for words in itertools.product(pool, repeat=n) if n < 3 else \
                    itertools.islice(itertools.permutations(pool, n), 0, None, 23 * n * n):
                read += _check([command, *words])
    assert read > 200


def test_spec_records_what_it_reads_and_refuses_the_rest() -> None:
    spec = Spec()
    spec.add_argument("-x", dest="x", action="store_true")
    spec.add_argument("file")
    assert spec.supported and spec.table() == {"-h": False, "--help": False, "-x": False}
    assert parse(spec, ["f", "-x"]) == {"x": True, "file": "f"}
    spec.add_argument("--y", action="store_const", const=1)
    assert not spec.supported and parse(spec, ["f"]) is None
    assert Namespace(a=1) == Namespace(a=1) and "a" in Namespace(a=1)


def test_permute_as_getopt() -> None:
    table = {"-f": True, "-q": False, "--output": True, "--object": True}
    assert permute(["a", "-f", "x", "b", "-q"], table) == ["-f", "x", "-q", "--", "a", "b"]
    assert permute(["--outp", "json", "a"], table) == ["--outp", "json", "--", "a"]
    assert permute(["-qfx", "a", "--", "-q"], table) == ["-qfx", "--", "a", "-q"]
    assert permute(["a", "-1G"], table, last_operand=True) == ["--", "a", "-1G"]


@pytest.mark.parametrize("argv", [
    [], ["img", "info", "a"], ["-v", "img"], ["-vv", "--verbose", "img", "-p", "x"],
    ["-p", "no:x", "-pno:y", "img", "info"], ["--version"], ["--version", "img"],
    ["", "x"], ["-p", "-v", "img"], ["-p=x", "img"], ["--verb", "img"], ["-vx", "img"],
    ["-", "img"], ["--", "img"], ["-p"],
], ids=repr)
def test_global_options_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = _read_globals(argv)
    if fast is None:
        return
    assert vars(fast) == vars(_pre_parse(argv)), argv


def test_global_options_usual_forms_are_read_without_argparse() -> None:
    for argv in (["img", "info", "a"], ["-v", "-p", "no:x", "img"], ["--version"]):
        assert _read_globals(argv) is not None


def test_help_and_errors_still_argparse_s(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "info", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: vmforge img info [-h]")
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "info", "-x", "a"],
                         capture_output=True, text=True)
    assert (out.returncode, out.stderr) == (1, "vmforge img: unrecognized option '-x'\n"
                                            "Try 'vmforge img --help' for more information\n")
