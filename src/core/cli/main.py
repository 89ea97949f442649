"""Entry point of the ``vmforge`` command.

Each sub-command lives in its own module of :mod:`vmforge.cli` that defines
``register(subparsers) -> None``; ``register`` adds its parser and sets
``func`` (called with the parsed namespace, returns the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from vmforge import __version__

#: sub-command modules, in the order ``--help`` lists them
COMMAND_MODULES = ("vmforge.cli.run", "vmforge.cli.img", "vmforge.cli.plugins_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmforge",
        description="A hackable full-system emulator and VMM; formats, devices and "
        "machines are plugins.",
    )
    parser.add_argument("--version", action="version", version=f"vmforge {__version__}")
    parser.add_argument("-p", dest="plugin_opts", action="append", default=[], metavar="NAME",
                        help="plugin control: 'no:NAME' blocks a distribution or entry point; "
                        "NAME enables one when autoload is off "
                        "(VMFORGE_DISABLE_PLUGIN_AUTOLOAD=1)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="vmforge: %(levelname)s: %(name)s: %(message)s",
    )
    from vmforge.plugins import PluginError, configure

    try:
        configure(args.plugin_opts)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except PluginError as exc:
        print(f"vmforge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
