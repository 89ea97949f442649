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
from collections.abc import Sequence

from vmforge import __version__
from vmforge.errors import VmforgeError

#: sub-command -> the module that registers it, in the order ``--help`` lists them
COMMANDS = {"run": "vmforge.cli.run", "img": "vmforge.cli.img",
            "plugins": "vmforge.cli.plugins_cmd"}


#: set (to anything but 0) to get the traceback of an internal error
DEBUG_ENV = "VMFORGE_DEBUG"

#: commands whose parsers plugins may extend (hook ``vmforge_add_options``)
EXTENSIBLE = ("run", "img")


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", dest="plugin_opts", action="append", default=[], metavar="NAME",
                        help="plugin control: 'no:NAME' blocks a distribution or entry point; "
                        "NAME enables one when autoload is off "
                        "(VMFORGE_DISABLE_PLUGIN_AUTOLOAD=1)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (repeat for debug)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``command``'s sub-parser also gets plugins' options."""
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
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
    import logging

    from vmforge.plugins import PluginError, configure

    configure(known.plugin_opts)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(known.verbose, 2),
        format="vmforge: %(levelname)s: %(name)s: %(message)s",
    )
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
