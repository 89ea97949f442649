"""``vmforge img bitmap (--add|--remove|--clear|--enable|--disable|--merge SRC
[-b SRC_FILE [-F SRC_FMT]])... [-g GRANULARITY] [-f FMT] FILE BITMAP``: persistent
dirty bitmaps, as ``qemu-img bitmap`` 7.2 (the operations run in the order given)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vmforge.block.driver import BlockError
from vmforge.cli.img_common import UsageError, open_image, size_arg

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["add_arguments", "cmd_bitmap"]

_OPS = ("add", "remove", "clear", "enable", "disable", "merge")


class _Op(argparse.Action):
    """Collects ``--add``, ``--merge SRC``, ... in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        ops = list(getattr(namespace, "ops", None) or [])
        ops.append((self.const, values if isinstance(values, str) else None))
        namespace.ops = ops


def _bad_granularity() -> UsageError:
    return UsageError("Invalid granularity specified")


def cmd_bitmap(args: argparse.Namespace) -> int:
    ops: list[tuple[str, str | None]] = args.ops or []
    if not ops:
        raise UsageError("Need at least one of --add, --remove, --clear, --enable, "
                         "--disable, or --merge")
    if args.granularity is not None and not any(op == "add" for op, _ in ops):
        raise UsageError("granularity only supported with --add")
    if args.source_format and not args.source_file:
        raise UsageError("-F only supported with -b")
    if args.source_file and not any(op == "merge" for op, _ in ops):
        raise UsageError("Merge bitmap source file only supported with --merge")
    if args.file is None or args.bitmap is None:
        raise UsageError("Expecting filename and bitmap name")
    gran = size_arg(args.granularity, _bad_granularity) if args.granularity else None
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        drv = bb.top
        for op, value in ops:
            try:
                _apply(drv, op, value, args, gran)
            except BlockError as exc:
                raise BlockError(f"Operation {op} on bitmap {args.bitmap} failed: "
                                 f"{_plain(exc)}") from exc
    return 0


def _plain(exc: BlockError) -> str:
    text = str(exc)
    prefix = f"{exc.filename}: " if exc.filename else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _apply(drv: Any, op: str, value: str | None, args: argparse.Namespace,
           gran: int | None) -> None:
    if not hasattr(drv, "add_bitmap"):
        raise BlockError(f"Can't store persistent bitmaps to {args.file}: Operation not "
                         "supported")
    name = args.bitmap
    if op == "add":
        drv.add_bitmap(name, gran)
    elif op == "remove":
        drv.remove_bitmap(name)
    elif op == "clear":
        drv.clear_bitmap(name)
    elif op in ("enable", "disable"):
        drv.set_bitmap_enabled(name, op == "enable")
    else:
        assert value is not None
        if args.source_file:
            with open_image(args.source_file, args.source_format, force_share=True,
                            backing=False) as src:
                if not hasattr(src.top, "bitmap_bits"):
                    raise BlockError(f"Dirty bitmap '{value}' not found")
                bits, g = src.top.bitmap_bits(value)
        else:
            bits, g = drv.bitmap_bits(value)
        drv.merge_bitmap(name, bits, g)


def add_arguments(p: argparse.ArgumentParser, common: Callable[..., None]) -> None:
    """The arguments of ``bitmap`` (``common``: ``vmforge img``'s shared options)."""
    common(p, share=False)
    for op in _OPS[:-1]:
        p.add_argument(f"--{op}", action=_Op, nargs=0, const=op, dest="ops",
                       help=f"{op} the bitmap")
    p.add_argument("--merge", action=_Op, const="merge", dest="ops", metavar="SRC",
                   help="merge the bitmap SRC into the bitmap")
    p.add_argument("-b", dest="source_file", metavar="SRC_FILE",
                   help="--merge takes SRC from this image")
    p.add_argument("-F", dest="source_format", metavar="SRC_FMT", help="format of SRC_FILE")
    p.add_argument("-g", dest="granularity", metavar="GRANULARITY",
                   help="granularity of a new bitmap (--add)")
    p.add_argument("file", nargs="?")
    p.add_argument("bitmap", nargs="?")
