"""Entry point of the ``vmforge`` command.

Each sub-command lives in its own module of :mod:`vmforge.cli` that defines
``register(subparsers) -> None``; ``register`` adds its parser and sets
``func`` (called with the parsed namespace, returns the exit status).

Errors end as one line on stderr and a non-zero status, as with QEMU: a
command's own errors as it words them, an unexpected exception as
``vmforge: internal error: ...`` (``VMFORGE_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vmforge import __version__
from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

#: sub-command -> the module that registers it, in the order ``--help`` lists them
COMMANDS = {"run": "vmforge.cli.run", "img": "vmforge.cli.img",
            "plugins": "vmforge.cli.plugins_cmd"}


#: set (to anything but 0) to get the traceback of an internal error
DEBUG_ENV = "VMFORGE_DEBUG"

#: commands whose parsers plugins may extend (hook ``vmforge_add_options``)
EXTENSIBLE = ("run", "img")


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (``COLUMNS``, else the terminal of
    stdout, else 80) without importing :mod:`shutil` (bz2, lzma: ~4 ms of start-up)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, as wide as argparse makes it (the terminal's columns - 2),
    measured with :func:`terminal_columns`: argparse makes one for each argument added."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with :class:`HelpFormatter` by default (its sub-parsers too:
    argparse makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", dest="plugin_opts", action="append", default=[], metavar="NAME",
                        help="plugin control: 'no:NAME' blocks a distribution or entry point; "
                        "NAME enables one when autoload is off "
                        "(VMFORGE_DISABLE_PLUGIN_AUTOLOAD=1)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (repeat for debug)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``command``'s sub-parser also gets plugins' options."""
    parser = ArgumentParser(
        prog="vmforge",
        description="A hackable full-system emulator and VMM; formats, devices and "
        "machines are plugins.",
    )
    parser.add_argument("--version", action="version", version=f"vmforge {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # a known command needs only its own module (start-up time); else all, for help
    modules = [COMMANDS[command]] if command in COMMANDS else list(COMMANDS.values())
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command not built yet
            raise
        module.register(sub)
    if command in EXTENSIBLE and command in sub.choices:
        from vmforge.plugins import registry

        registry().hook.vmforge_add_options.call_historic(
            kwargs={"parser": sub.choices[command], "command": command})
    return parser


def _set_up_logging(verbose: int, *, now: bool) -> None:
    """``basicConfig`` for the command line: at once, or (``now`` false: ``vmforge img``
    without ``-v``) when the first message is emitted, so a command that logs nothing
    never imports :mod:`logging` (~9 ms of start-up; :func:`vmforge.lazy.lazy_logger`)."""
    from vmforge.lazy import defer_logging_setup

    def setup(logging: ModuleType) -> None:
        logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                            format="vmforge: %(levelname)s: %(name)s: %(message)s")

    if now:
        import logging  # noqa: F401   # defer_logging_setup then runs it at once
    defer_logging_setup(setup)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = ArgumentParser(add_help=False)
    _global_options(pre)
    pre.add_argument("--version", action="store_true")
    pre.add_argument("command", nargs="?")
    # everything after the command is the command's own (``img convert -p`` is
    # its progress flag, not the plugin option)
    pre.add_argument("rest", nargs=argparse.REMAINDER)
    known, _rest = pre.parse_known_args(argv)
    if known.version and known.command is None:  # before importing every command
        print(f"vmforge {__version__}")
        return 0
    from vmforge.plugins import PluginError, configure

    # hooks plugins that declare other commands are not loaded (``vmforge plugins``
    # lists and checks them all)
    configure(known.plugin_opts, command=known.command if known.command in EXTENSIBLE else None)
    _set_up_logging(known.verbose, now=known.command != "img" or known.verbose > 0)
    try:
        parser = build_parser(known.command)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        if args.command in EXTENSIBLE:
            from vmforge.plugins import registry

            registry().hook.vmforge_configure(args=args, command=args.command)
        return int(args.func(args) or 0)
    except (PluginError, VmforgeError) as exc:
        print(f"vmforge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        detail = " ".join(str(exc).split()) or "(no message)"
        print(f"vmforge: internal error: {type(exc).__name__}: {detail} "
              f"({DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
