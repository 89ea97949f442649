"""Entry point of the ``vmforge`` command.

Each sub-command lives in its own module of :mod:`vmforge.cli` that defines
``register(subparsers) -> None``; ``register`` adds its parser and sets
``func`` (called with the parsed namespace, returns the exit status).

Errors end as one line on stderr and a non-zero status, as with QEMU: a
command's own errors as it words them, an unexpected exception as
``vmforge: internal error: ...`` (``VMFORGE_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import os
import sys

from vmforge import __version__
from vmforge.cli.img_getopt import Namespace
from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import ModuleType

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
    from vmforge.cli.parsers import ArgumentParser
    from vmforge.lazy import import_module

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
            module = import_module(name)
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
    or ``run`` without ``-v``) when the first message is emitted, so a command that logs nothing
    never imports :mod:`logging` (~9 ms of start-up; :func:`vmforge.lazy.lazy_logger`)."""
    from vmforge.lazy import defer_logging_setup

    def setup(logging: ModuleType) -> None:
        logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                            format="vmforge: %(levelname)s: %(name)s: %(message)s")

    if now:
        import logging  # noqa: F401   # defer_logging_setup then runs it at once
    defer_logging_setup(setup)


def _read_globals(argv: list[str]) -> Namespace | None:
    """What :func:`_pre_parse` makes of the usual command lines (``-v``, ``-vv``,
    ``--verbose``, ``-p NAME``, ``-pNAME``, ``--version``, then the command), read
    without argparse (start-up time: :mod:`vmforge.cli.img_getopt`); None for any
    other, which argparse reads (and words its errors)."""
    plugin_opts: list[str] = []
    verbose, version = 0, False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        i += 1
        if arg == "--verbose" or (len(arg) > 1 and arg.strip("v") == "-"):
            verbose += 1 if arg == "--verbose" else len(arg) - 1
        elif arg == "--version":
            version = True
        elif arg == "-p" and i < len(argv) and not argv[i].startswith("-"):
            plugin_opts.append(argv[i])
            i += 1
        elif arg.startswith("-p") and len(arg) > 2 and "=" not in arg:
            plugin_opts.append(arg[2:])
        else:
            return None
    return Namespace(plugin_opts=plugin_opts, verbose=verbose, version=version,
                     command=argv[i] if i < len(argv) else None, rest=argv[i + 1:])


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    """The global options and the command (argparse's reading)."""
    import argparse

    from vmforge.cli.parsers import ArgumentParser

    pre = ArgumentParser(add_help=False)
    _global_options(pre)
    pre.add_argument("--version", action="store_true")
    pre.add_argument("command", nargs="?")
    # everything after the command is the command's own (``img convert -p`` is
    # its progress flag, not the plugin option)
    pre.add_argument("rest", nargs=argparse.REMAINDER)
    return pre.parse_known_args(argv)[0]


def _img_args(known: Namespace | argparse.Namespace) -> Namespace | None:
    """``vmforge img``'s command line read without argparse (the full parser's
    namespace), or None: argparse reads it (help, errors, hooks plugins' options)."""
    from vmforge.cli.img import parse_command_line
    from vmforge.plugins import registry

    if known.version or registry().hook_entries():    # a plugin may add options
        return None
    values = parse_command_line(known.rest)
    if values is None:
        return None
    return Namespace(plugin_opts=known.plugin_opts, verbose=known.verbose, command="img",
                     **values)


def _run_args(known: Namespace | argparse.Namespace) -> Namespace | None:
    """``vmforge run``'s common command line read without argparse (the full parser's
    namespace: :mod:`vmforge.cli.run_getopt`), or None: argparse reads it."""
    from vmforge.cli.run_getopt import parse_command_line

    values = None if known.version else parse_command_line(known.rest)
    if values is None:
        return None
    return Namespace(plugin_opts=known.plugin_opts, verbose=known.verbose, command="run",
                     **values)


#: the command main() ran last (``entry`` leaves quickly after ``img``)
_ran: str | None = None
#: set by :func:`entry`: the cyclic garbage collector is off until the command runs
_startup_gc_off = False


def _start_startup_gc() -> None:
    """The console script's start-up without the cyclic garbage collector: what it
    makes (modules, classes, functions, the parsed command line) is not garbage, yet
    every few hundred new objects the collector walked them, and all of them at each
    full collection (~1 ms of ``img info``).  Cycles made before are collected first
    (an object closed by its ``__del__`` still is)."""
    global _startup_gc_off
    import gc

    gc.collect()
    gc.disable()
    _startup_gc_off = True


def _end_startup_gc() -> None:
    """When the command starts: the objects start-up made go to the collector's
    permanent generation (``gc.freeze``: never walked again, the collection of
    :func:`exit_now` included) and the collector is on again for the command."""
    global _startup_gc_off
    import gc

    gc.freeze()
    gc.enable()
    _startup_gc_off = False


def main(argv: Sequence[str] | None = None) -> int:
    global _ran
    argv = list(sys.argv[1:] if argv is None else argv)
    known = _read_globals(argv) or _pre_parse(argv)
    _ran = known.command
    if known.version and known.command is None:  # before importing every command
        print(f"vmforge {__version__}")
        return 0
    from vmforge.plugins import PluginError, configure

    # hooks plugins that declare other commands are not loaded (``vmforge plugins``
    # lists and checks them all)
    # (``vmforge plugins`` reads the metadata afresh: it is where one looks when in doubt)
    configure(known.plugin_opts, command=known.command if known.command in EXTENSIBLE else None,
              refresh=known.command == "plugins")
    _set_up_logging(known.verbose, now=known.command not in ("img", "run") or known.verbose > 0)
    try:
        args: Namespace | argparse.Namespace | None = (
            _img_args(known) if known.command == "img"
            else _run_args(known) if known.command == "run" else None)
        if args is None:
            parser = build_parser(known.command)
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
        if args.command in EXTENSIBLE:
            from vmforge.plugins import registry

            registry().hook.vmforge_configure(args=args, command=args.command)
        if _startup_gc_off:
            _end_startup_gc()
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


def entry() -> None:
    """The ``vmforge`` console script: :func:`main`, its start-up without the cyclic
    garbage collector (:func:`_start_startup_gc`); after an ``img`` command the
    process ends without the interpreter's finalization (:func:`exit_now`)."""
    _start_startup_gc()
    try:
        status = main()
    finally:
        if _startup_gc_off:     # main() returned before running a command
            _end_startup_gc()
    if _ran == "img":
        exit_now(status)
    sys.exit(status)


def exit_now(status: int) -> None:
    """End the process at once, as qemu-img does, instead of finalizing the
    interpreter (tearing down every module: 10-30 ms after an ``img`` command, more
    than qemu-img's whole run).  First what finalization does that matters: objects
    in reference cycles are collected (an image closed by its ``__del__``), the
    ``atexit`` functions run (logging's flush among them), the standard streams are
    flushed.  Returns, for the normal exit, when another thread is alive or a
    stream cannot be flushed."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    import atexit
    import gc

    gc.collect()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status & 0xFF)


if __name__ == "__main__":
    entry()
