"""``vmforge img amend [-f FMT] -o OPTIONS [--force] [-p] [-q] FILE``: change options of
an existing image in place, as ``qemu-img amend`` (the format's ``amend``)."""

from __future__ import annotations

from collections.abc import Callable

from vmforge.block.driver import BlockDriver, CreateOption, OptionValueError, UnsupportedOperation
from vmforge.block.probe import driver_class, probe_format
from vmforge.cli.img_common import ProgressBar, UsageError, open_image, parse_options
from vmforge.cli.img_words import QemuImgError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["add_arguments", "amend_options_help", "cmd_amend"]


def _not_supported(fmt: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"Format driver '{fmt}' does not support option amendment")


def _type_name(name: str, opt: CreateOption) -> str:
    if opt.type is bool:
        return "bool (on/off)"
    if opt.type is int:
        return "size" if name == "size" else "num"
    return "str"


def amend_options_help(cls: type[BlockDriver]) -> str:
    """``amend -o help``: the options the format can change, as qemu-img lists them."""
    lines = [f"Amend options for '{cls.format_name}':"]
    for name, opt in sorted(cls.amend_options.items()):
        left = f"{name}=<{_type_name(name, opt)}>"
        lines.append(f"  {left:<22} - {opt.help}")
    return "\n".join(lines)


def cmd_amend(args: argparse.Namespace) -> int:
    if not args.options:
        raise UsageError("Must specify options (-o)")
    opts: dict[str, Any] = parse_options(args.options)
    if "help" in opts:
        if args.format is None and args.file is None:
            raise UsageError("Expecting one image file name")
        cls = driver_class(args.format or probe_format(args.file))
        if not cls.amend_options:
            raise _not_supported(cls.format_name)
        print(amend_options_help(cls))
        return 0
    if args.file is None:
        raise UsageError("Expecting one image file name")
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        drv = bb.top
        if type(drv).amend is BlockDriver.amend:
            raise _not_supported(drv.format_name)
        bar = ProgressBar() if args.progress and not args.quiet else None
        if bar is not None:
            bar(0, 1)
        try:
            drv.amend(opts, args.force)
        except OptionValueError as exc:
            raise QemuImgError(exc.words) from None
        if bar is not None:
            bar.finish()
    return 0


def add_arguments(p: argparse.ArgumentParser, common: Callable[..., None]) -> None:
    """The arguments of ``amend`` (``common``: ``vmforge img``'s shared options)."""
    common(p, share=False, quiet=True)
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="options to change k=v,... ('-o help' lists them)")
    p.add_argument("--force", action="store_true",
                   help="allow changes that are refused otherwise")
    p.add_argument("-p", "--progress", dest="progress", action="store_true",
                   help="show progress on stderr")
    p.add_argument("file", nargs="?")
