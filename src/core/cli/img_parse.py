"""The command line of ``vmforge img``'s sub-commands, read as qemu-img reads it.

qemu-img parses with GNU ``getopt_long``: options may come after the file
names (``create t.qcow2 -F qcow2 6G``, ``convert src -O raw dst``), short
options cluster (``-qf qcow2``, ``-fqcow2``), a unique prefix of a long option
names it, and ``--`` ends the options.  argparse matches positionals greedily
where they stand, so :class:`GnuParser` first permutes the arguments as
getopt does (options first, then ``--`` and the operands), and words its
errors as qemu-img does, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vmforge.cli.img_common import error, prog, set_compat
from vmforge.cli.img_getopt import permute
from vmforge.cli.parsers import ArgumentParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["CompatAction", "GnuParser", "command_not_found"]


class CompatAction(argparse.Action):
    """``--qemu-img-compat``: on at once, so that even a bad command line is worded so."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        set_compat(True)


class GnuParser(ArgumentParser):
    """A sub-command's parser: GNU getopt's argument order and qemu-img's errors.

    ``extra_operand`` words an operand too many (``{}``: the operand),
    ``missing_operand`` one too few.
    ``last_operand=True`` (resize) takes the last argument as an operand
    before parsing, as qemu-img does so that ``-1G`` is a size, not an option.
    """

    def __init__(self, *args: Any, last_operand: bool = False,
                 extra_operand: str = "Expecting one image file name",
                 missing_operand: str = "Expecting one image file name", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.missing_operand = missing_operand
        self.last_operand = last_operand
        self.extra_operand = extra_operand     # its words for one operand too many

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        ns, extra = super().parse_known_args(self.permute(argv), namespace)
        if extra:   # said here, in qemu-img's words, not by the parent parser
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns, extra

    def _takes_value(self) -> dict[str, bool]:
        return {s: a.nargs != 0 for a in self._actions for s in a.option_strings}

    def permute(self, argv: list[str]) -> list[str]:
        """``argv`` as getopt sees it: the options, then ``--`` and the operands."""
        return permute(argv, self._takes_value(), self.last_operand)

    def error(self, message: str) -> NoReturn:
        """qemu-img's wording of a bad command line, and its exit status 1."""
        words = _qemu_words(message, self.extra_operand, self.missing_operand)
        error(words)
        if not words.startswith("--output"):      # qemu-img adds no hint to this one
            print(f"Try '{prog()} --help' for more information", file=sys.stderr)
        raise SystemExit(1)


def _qemu_words(message: str, extra_operand: str, missing_operand: str) -> str:
    """argparse's message in qemu-img's words where qemu-img has some."""
    if message.startswith("unrecognized arguments: "):
        first = message.split(": ", 1)[1].split(" ")[0]
        if first.startswith("-"):
            return f"unrecognized option '{first}'"
        return extra_operand.format(first)
    if message.startswith("the following arguments are required"):
        return missing_operand
    if message.startswith("argument ") and message.endswith("expected one argument"):
        flag = message.split(" ", 2)[1].rstrip(":").split("/")[0]
        return f"missing argument for option '{flag}'"
    if message.startswith("argument --output") and "invalid choice" in message:
        return "--output must be used with human or json as argument."
    return message


def command_not_found(message: str) -> NoReturn:
    """``vmforge img``'s own parser: an unknown sub-command as qemu-img words it."""
    if "invalid choice: " in message:
        message = "Command not found: " + message.split("invalid choice: ", 1)[1].split(
            " (choose", 1)[0].strip("'")
    error(message)
    print(f"Try '{prog()} --help' for more information", file=sys.stderr)
    raise SystemExit(1)
