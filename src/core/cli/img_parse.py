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

from vmforge.cli.img_common import error, prog
from vmforge.cli.main import ArgumentParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["GnuParser", "command_not_found"]


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

    def _long_match(self, name: str, table: dict[str, bool]) -> str | None:
        if name in table:
            return name
        found = [s for s in table if s.startswith("--") and s.startswith(name)]
        return found[0] if len(found) == 1 else None

    def permute(self, argv: list[str]) -> list[str]:
        """``argv`` as getopt sees it: the options, then ``--`` and the operands."""
        tail: list[str] = []
        if self.last_operand and argv and argv[-1] not in ("--help", "-h"):
            tail = [argv.pop()]
        table = self._takes_value()
        options: list[str] = []
        operands: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                operands.extend(argv[i:])
                break
            if not arg.startswith("-") or arg == "-":
                operands.append(arg)
                continue
            options.append(arg)
            if arg.startswith("--"):
                name = self._long_match(arg.partition("=")[0], table)
                if "=" not in arg and name is not None and table[name] and i < len(argv):
                    options.append(argv[i])
                    i += 1
                continue
            for k, ch in enumerate(arg[1:], 1):   # a cluster of short options
                if table.get(f"-{ch}"):
                    if k == len(arg) - 1 and i < len(argv):   # its value is the next word
                        options.append(argv[i])
                        i += 1
                    break
        operands.extend(tail)
        return options + (["--", *operands] if operands else [])

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
