"""``vmforge img dd [-f FMT] [-O OUTPUT_FMT] [-U] [bs=SIZE] [count=N] [skip=N] if=INPUT
of=OUTPUT``: copy an image block by block, as ``qemu-img dd``.

qemu-img 7.2's rules, kept: ``bs`` is 512 unless given; the output (created
anew, format ``-O``, raw by default) holds the input from ``skip * bs`` up to
``count * bs`` bytes from the input's start (``count`` counts the skipped blocks
too) or the input's end; a ``skip`` past the end is reported, and the output is
then empty; the operands and their errors are worded as qemu-img's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from vmforge.block.backend import BlockBackend, create_image
from vmforge.block.driver import BlockError
from vmforge.cli import img_objects, img_words
from vmforge.cli.img_common import error, open_image, size_arg, warn
from vmforge.cli.img_create import format_class
from vmforge.cli.img_protocol import file_protocol_options
from vmforge.cli.img_words import QemuImgError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["add_arguments", "cmd_dd", "parse_operands"]

_SUFFIXES = ("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",)
_MAX_BS = (1 << 31) - 1
_CHUNK = 4 << 20            # bytes per read/write (whole blocks of bs)


def _bad(name: str) -> QemuImgError:
    return QemuImgError(f"Invalid {name} specified. You may use k, M, G, T, P or E "
                        "suffixes for", *_SUFFIXES)


def parse_operands(operands: list[str]) -> dict[str, Any]:
    """``bs=``, ``count=``, ``skip=``, ``if=``, ``of=`` as qemu-img's ``img_dd`` reads them."""
    out: dict[str, Any] = {"bs": 512}
    for operand in operands:
        key, sep, value = operand.partition("=")
        if not sep or key not in ("bs", "count", "skip", "if", "of"):
            raise QemuImgError(f"unrecognized operand {key}")
        if key in ("if", "of"):
            out[key] = value
            continue
        number = size_arg(value, functools.partial(_bad, key))
        if key == "bs" and not 1 <= number <= _MAX_BS:
            raise QemuImgError(f"Invalid bs specified. Must be between 1 and {_MAX_BS}.")
        out[key] = number
    if "if" not in out or "of" not in out:
        raise QemuImgError("Must specify both input and output files")
    return out


def cmd_dd(args: argparse.Namespace) -> int:
    dd = parse_operands(args.operands)
    bs: int = dd["bs"]
    out_cls = format_class(args.output_format)
    with open_image(dd["if"], args.format, force_share=args.force_share) as src:
        size = src.size
        if "count" in dd and size > dd["count"] * bs:
            size = dd["count"] * bs
        start = dd.get("skip", 0) * bs
        if start > size:
            error(f"{dd['if']}: cannot skip to specified offset")     # (and goes on)
            start = size
        dst = img_objects.target_filename(dd["of"])
        secret = img_objects.context().resolve_secret({})
        with file_protocol_options(dst, secret, warn) as format_opts:
            create_image(out_cls.format_name, dst, size - start, **format_opts)
        try:
            target = BlockBackend.open(dst, out_cls.format_name, readonly=False,
                                       cache="unsafe")
        except BlockError as exc:
            raise img_words.open_failed(dd["of"], exc, out_cls.format_name) from exc
        with target:
            _copy(src, target, start, size, max(bs, _CHUNK // bs * bs))
    return 0


def _copy(src: BlockBackend, dst: BlockBackend, start: int, end: int, chunk: int) -> None:
    buf = bytearray(chunk)
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = min(chunk, end - pos)
        src.readinto(pos, view[:n])
        dst.write(pos - start, view[:n])
        pos += n
    dst.flush()


def add_arguments(p: argparse.ArgumentParser, common: Callable[..., None]) -> None:
    """The arguments of ``dd`` (``common``: ``vmforge img``'s shared options)."""
    common(p)
    p.add_argument("-O", dest="output_format", default="raw", metavar="FMT",
                   help="output format (default raw)")
    p.add_argument("operands", nargs="*", metavar="OPERAND",
                   help="bs=SIZE count=N skip=N if=INPUT of=OUTPUT")
