"""``vmforge img``: qemu-img's sub-commands over vmforge's block layer.

The flags, the human output and the JSON keys follow qemu-img, so scripts
written for one work with the other.  Formats are plugins (``-f``/``-O``
name an entry point of ``vmforge.block``); without ``-f`` the format is
probed, and raw is never guessed for a writable open.

Exit codes: 0 success, 1 error; ``check`` 2 corruptions, 3 leaks, 63 no
check for that format; ``compare`` 1 differ, 2 cannot open, 4 cannot read.

The modules: ``img_parse`` (GNU getopt's argument order, qemu-img's usage
errors), ``img_words`` (qemu-img's error texts), ``img_common`` (prefix and
``--qemu-img-compat``, sizes, opening, progress, QDict-ordered JSON),
``img_objects`` (``--object``, ``--image-opts``, ``json:``/``file:`` names),
``img_report`` (info, check, compare, map), ``img_create`` (+ ``img_formatting``,
``img_protocol``), ``img_convert``, ``img_modify`` (resize, snapshot, rebase,
commit), ``img_amend``, ``img_bitmap``, ``img_dd``.

Start-up time: a command imports the module of its own sub-command only, when it
runs, and builds its own sub-command's parser only (:class:`LazyParser`);
``--help`` still lists every sub-command.
"""

from __future__ import annotations

import os
import sys

from vmforge.block.driver import BlockError, UnsupportedOperation
from vmforge.cli import img_objects
from vmforge.cli.img_common import (
    COMPAT_ENV,
    ProgressBar,
    UsageError,
    error,
    parse_options,
    prog,
    report,
    set_compat,
    size_to_str,
)
from vmforge.cli.img_getopt import Spec, parse
from vmforge.errors import VmforgeError
from vmforge.lazy import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, TypeAlias

    from vmforge.cli.img_getopt import ArgumentAdder
    from vmforge.cli.img_parse import GnuParser

    #: what runs a sub-command: a function, or ``"module:function"`` of
    #: :mod:`vmforge.cli` (imported when the sub-command runs)
    Handler: TypeAlias = Callable[[argparse.Namespace], int] | str

__all__ = ["LazyParser", "ProgressBar", "parse_command_line", "parse_options", "register",
           "size_to_str"]


def _handler(handler: Handler) -> Callable[[argparse.Namespace], int]:
    if callable(handler):
        return handler
    module, _, name = handler.partition(":")
    return getattr(import_module(f"vmforge.cli.{module}"), name)  # type: ignore[no-any-return]


# -- the parser ---------------------------------------------------------------------------


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Turn expected errors into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            img_objects.configure(args)
            return _handler(handler)(args)
        except BrokenPipeError:  # the reader went away (| head): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (VmforgeError, ValueError, OSError) as exc:
            if isinstance(exc, UnsupportedOperation | UsageError | BlockError
                          | img_objects.ObjectError):
                report(exc)
            elif isinstance(exc, OSError):   # one line that names the file, as qemu-img
                name = exc.filename or getattr(args, "file", None) or ""
                error(f"{name}{': ' if name else ''}{exc.strerror or exc}")
            else:
                error(f"{type(exc).__name__}: {exc}")
            return 1
        except Exception as exc:  # a bug, most likely in a format plugin
            print(f"{prog()}: internal error: {type(exc).__name__}: {exc}"
                  + ("" if getattr(args, "verbose", 0) else " (vmforge -v img ... shows the "
                     "traceback)"), file=sys.stderr)
            if getattr(args, "verbose", 0):
                import traceback

                traceback.print_exc()
            return 1

    return run


def _common(p: ArgumentAdder, *, fmt: bool = True, share: bool = True,
            output: bool = False, quiet: bool = False) -> None:
    if fmt:
        p.add_argument("-f", dest="format", metavar="FMT", help="image format (default: probe)")
    if share:
        p.add_argument("-U", "--force-share", action="store_true", dest="force_share",
                       help="open without locking, even if another process writes the image")
    if output:
        p.add_argument("--output", choices=("human", "json"), default="human")
    if quiet:
        p.add_argument("-q", action="store_true", dest="quiet", help="print nothing on success")
    img_objects.add_object_options(p)


class LazyParser:
    """A sub-command's parser, made (a :class:`GnuParser`, its arguments added by
    ``build``) when first used: ``vmforge img info`` builds the parser of ``info``,
    not those of the thirteen other sub-commands.  Every attribute is the parser's."""

    def __init__(self, *, build: Callable[[ArgumentAdder], None], **kwargs: Any) -> None:
        self._build: Callable[[ArgumentAdder], None] | None = build
        self._kwargs = kwargs
        self._parser: GnuParser | None = None

    def parser(self) -> GnuParser:
        """The parser, built on the first call."""
        if self._parser is None:
            assert self._build is not None
            from vmforge.cli.img_parse import GnuParser

            build, self._build = self._build, None
            self._parser = GnuParser(**self._kwargs)
            build(self._parser)
        return self._parser

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_build", "_kwargs", "_parser"):
            raise AttributeError(name)     # protocols (copy, pickle), or not set yet
        return getattr(self.parser(), name)


def _info(p: ArgumentAdder) -> None:
    _common(p, output=True)
    p.add_argument("--backing-chain", action="store_true", help="every image of the chain")
    p.add_argument("file")


def _create(p: ArgumentAdder) -> None:
    _common(p, share=False, quiet=True)
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="create options k=v,... ('-o help' lists them)")
    p.add_argument("-b", dest="backing", metavar="BACKING", help="backing file")
    p.add_argument("-F", dest="backing_format", metavar="FMT",
                   help="backing file format (needed with -b)")
    p.add_argument("-u", dest="unsafe", action="store_true",
                   help="do not open the backing file (needs SIZE)")
    p.add_argument("file", nargs="?")
    p.add_argument("size", nargs="?")


def _convert(p: ArgumentAdder) -> None:
    from vmforge.block.backend import CACHE_MODES

    _common(p, quiet=True)
    p.add_argument("-O", dest="output_format", default="raw", metavar="FMT",
                   help="target format (default raw)")
    p.add_argument("--salvage", action="store_true", help="copy on past read errors: "
                   "an unreadable sector is written as zeros and reported on stderr")
    p.add_argument("-l", dest="snapshot", metavar="SNAPSHOT",
                   help="convert an internal snapshot: snapshot.id=ID[,snapshot.name=NAME], "
                   "snapshot.name=NAME, or NAME")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="target create options k=v,...")
    p.add_argument("-B", dest="backing", metavar="BACKING",
                   help="the target gets this backing file and only what the source's top "
                   "image allocates (the backing file must read as the source's)")
    p.add_argument("-F", dest="backing_format", metavar="FMT", help="format of BACKING")
    p.add_argument("-c", dest="compress", action="store_true", help="compress the target")
    p.add_argument("-t", dest="cache", choices=CACHE_MODES, default="unsafe",
                   help="the target's cache mode; the default, unsafe, never syncs it "
                   "(as qemu-img)")
    p.add_argument("-p", "--progress", dest="progress", action="store_true",
                   help="show progress on stderr")
    p.add_argument("-n", dest="no_create", action="store_true",
                   help="the target exists: do not create it")
    p.add_argument("--target-is-zero", action="store_true",
                   help="with -n: the target already reads as zeros")
    p.add_argument("-S", dest="sparse_size", metavar="SIZE",
                   help="zero runs of this many bytes become holes (default 4k; 0: none)")
    p.add_argument("-W", dest="out_of_order", action="store_true",
                   help="allow out-of-order writes (compressed writes always are)")
    p.add_argument("-m", dest="parallel", type=int, metavar="N",
                   help="parallel compressed writes (default 2)")
    p.add_argument("files", nargs="+", metavar="FILE", help="SRC... DST")


def _check(p: ArgumentAdder) -> None:
    _common(p, output=True, quiet=True)
    p.add_argument("-r", dest="repair", choices=("leaks", "all"), help="repair what is found")
    p.add_argument("file")


def _compare(p: ArgumentAdder) -> None:
    p.add_argument("-f", dest="format_a", metavar="FMT")
    p.add_argument("-F", dest="format_b", metavar="FMT")
    p.add_argument("-s", dest="strict", action="store_true", help="strict: sizes and "
                   "allocation must match too")
    p.add_argument("-U", "--force-share", action="store_true", dest="force_share")
    p.add_argument("-q", action="store_true", dest="quiet", help="print nothing: only the "
                   "exit status tells")
    p.add_argument("file_a", metavar="A")
    p.add_argument("file_b", metavar="B")


def _map(p: ArgumentAdder) -> None:
    _common(p, output=True)
    p.add_argument("file")


def _resize(p: ArgumentAdder) -> None:
    _common(p, share=False, quiet=True)
    p.add_argument("--shrink", action="store_true", help="allow shrinking (loses data)")
    p.add_argument("file")
    p.add_argument("size", metavar="[+-]SIZE")


def _snapshot(p: ArgumentAdder) -> None:
    _common(p)
    p.add_argument("-l", dest="list", action="store_true", help="list snapshots")
    p.add_argument("-c", dest="create", metavar="NAME", help="create a snapshot")
    p.add_argument("-a", dest="apply", metavar="NAME", help="revert the disk to a snapshot")
    p.add_argument("-d", dest="delete", metavar="NAME", help="delete a snapshot")
    p.add_argument("file")


def _rebase(p: ArgumentAdder) -> None:
    _common(p, share=False)
    p.add_argument("-b", dest="backing", metavar="BACKING",
                   help="the new backing file ('' for none)")
    p.add_argument("-F", dest="backing_format", metavar="FMT")
    p.add_argument("-u", dest="unsafe", action="store_true",
                   help="only rewrite the backing file name")
    p.add_argument("-p", "--progress", dest="progress", action="store_true")
    p.add_argument("file")


def _commit(p: ArgumentAdder) -> None:
    _common(p, share=False, quiet=True)
    p.add_argument("-p", "--progress", dest="progress", action="store_true")
    p.add_argument("file")


def _measure(p: ArgumentAdder) -> None:
    _common(p, output=True)
    p.add_argument("-O", dest="output_format", default="raw", metavar="FMT",
                   help="format to measure for (default raw)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="its create options k=v,...")
    p.add_argument("--size", metavar="SIZE", help="a new image of this size (no source)")
    p.add_argument("file", nargs="?")


def _arguments_of(module: str) -> Callable[[ArgumentAdder], None]:
    """The arguments that ``vmforge.cli.<module>.add_arguments`` adds."""

    def build(p: ArgumentAdder) -> None:
        import_module(f"vmforge.cli.{module}").add_arguments(p, _common)

    return build


#: sub-command -> (handler, one-line help, arguments, the parser's own options), in the
#: order ``--help`` lists them
SUBCOMMANDS: dict[str, tuple[str, str, Callable[[ArgumentAdder], None], dict[str, Any]]] = {
    "info": ("img_report:cmd_info", "show facts about an image", _info, {}),
    "create": ("img_create:cmd_create", "create a new image", _create,
               {"extra_operand": "Unexpected argument: {}"}),
    "convert": ("img_convert:cmd_convert", "copy an image, possibly to another format",
                _convert, {}),
    "check": ("img_report:cmd_check", "check an image's consistency", _check, {}),
    "compare": ("img_report:cmd_compare", "compare two images' contents", _compare, {}),
    "map": ("img_report:cmd_map", "show the allocation of an image", _map, {}),
    "resize": ("img_modify:cmd_resize", "change the virtual size", _resize,
               {"last_operand": True, "missing_operand": "Not enough arguments"}),
    "snapshot": ("img_modify:cmd_snapshot", "list, create, apply or delete internal "
                 "snapshots", _snapshot, {}),
    "rebase": ("img_modify:cmd_rebase", "change the backing file", _rebase, {}),
    "commit": ("img_modify:cmd_commit", "write an image's data into its backing file",
               _commit, {}),
    "measure": ("img_create:cmd_measure", "how large a new image would be", _measure, {}),
    "amend": ("img_amend:cmd_amend", "change options of an existing image in place",
              _arguments_of("img_amend"), {}),
    "bitmap": ("img_bitmap:cmd_bitmap", "add, remove, clear, enable, disable or merge "
               "persistent dirty bitmaps", _arguments_of("img_bitmap"), {}),
    "dd": ("img_dd:cmd_dd", "copy an image block by block (bs=, count=, skip=, if=, of=)",
           _arguments_of("img_dd"), {"missing_operand": "Must specify both input and output "
                                     "files"}),
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``vmforge img`` and its sub-commands."""
    from vmforge.cli.img_parse import CompatAction, command_not_found

    img = subparsers.add_parser("img", help="create, convert, check and inspect disk images",
                                description="qemu-img's sub-commands over vmforge's block "
                                "layer; formats are plugins (vmforge plugins --kind block).")
    set_compat(False)    # each parse starts plain (in-process runs share the module)
    img.add_argument("--qemu-img-compat", action=CompatAction, nargs=0,
                     help="word every message as qemu-img does ('qemu-img: ...'); also "
                     f"{COMPAT_ENV}=1")
    img.error = command_not_found     # type: ignore[method-assign]
    # each sub-command's parser is a LazyParser (argparse makes it with parser_class)
    sub = img.add_subparsers(dest="img_command", metavar="SUBCOMMAND",
                             parser_class=LazyParser)  # type: ignore[type-var]
    img.set_defaults(func=lambda args: (img.print_help(), 2)[1])
    for name, (handler, help, arguments, options) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help, description=help, build=_with_handler(arguments, handler),
                       **options)


def _with_handler(arguments: Callable[[ArgumentAdder], None],
                  handler: Handler) -> Callable[[ArgumentAdder], None]:
    def build(p: ArgumentAdder) -> None:
        p.set_defaults(func=_run(handler))
        arguments(p)

    return build


def parse_command_line(argv: list[str]) -> dict[str, Any] | None:
    """What ``vmforge img``'s parser makes of ``argv`` (after ``img``), read without
    argparse (:mod:`vmforge.cli.img_getopt`); None when argparse must read it (help, an
    error, an option before the sub-command, an argument of its own action)."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    handler, _help, arguments, options = SUBCOMMANDS[argv[0]]
    spec = Spec()
    _with_handler(arguments, handler)(spec)
    values = parse(spec, argv[1:], options.get("last_operand", False))
    if values is None:
        return None
    set_compat(False)     # as register does: each parse starts plain
    return {"qemu_img_compat": None, "img_command": argv[0], **values}
