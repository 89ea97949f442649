"""``vmforge img create`` and ``measure``: new images and their size."""

from __future__ import annotations

import argparse
import os
from typing import Any

from vmforge.block import ops
from vmforge.block.backend import create_image, resolve_backing
from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    CreateOption,
)
from vmforge.block.probe import driver_class
from vmforge.cli import img_objects
from vmforge.cli.img_common import (
    UsageError,
    dump_json,
    open_image,
    parse_options,
    size_arg,
)
from vmforge.cli.img_formatting import formatting_line

# -- create -------------------------------------------------------------------------------


def _option_type(opt: CreateOption) -> str:
    if opt.type is bool:
        return "bool (on/off)"
    if opt.type is int:
        return "size"
    if opt.type is str:
        return "str"
    return "value"


def create_options_help(cls: type[BlockDriver]) -> str:
    """``-o help``: the format's typed create options, as qemu-img lists them."""
    lines = [f"Supported {cls.format_name} options:"]
    for name, opt in sorted(cls.create_options.items()):
        left = f"  {name}=<{_option_type(opt)}>"
        extra = ""
        if opt.choices:
            extra += f" (allowed values: {', '.join(map(str, opt.choices))})"
        if opt.default is not None:
            extra += f" (default: {opt.default})"
        lines.append(f"{left:<24} - {opt.help}{extra}")
    lines.append(f"  {'size=<size>':<22} - Virtual disk size")
    return "\n".join(lines)


def cmd_create(args: argparse.Namespace) -> int:
    cls = driver_class(args.format)
    opts: dict[str, Any] = parse_options(args.options)
    if "help" in opts:
        print(create_options_help(cls))
        return 0
    if args.file is None:
        raise UsageError("create needs a FILE")
    size = size_arg(args.size) if args.size is not None else None
    if "size" in opts:
        size = size_arg(opts.pop("size"))
    backing = args.backing or opts.get("backing_file")
    backing_fmt = args.backing_format or opts.get("backing_fmt")
    if backing:
        if not cls.supports_backing:
            raise UsageError(f"format {cls.format_name} does not support backing files")
        path = resolve_backing(args.file, backing)
        if not backing_fmt:  # as qemu-img 7.2: the format is recorded, never guessed later
            detected = ""
            if not args.unsafe and os.path.isfile(path):
                from vmforge.block.probe import probe_format

                detected = f" (probing says {probe_format(path)})"
            raise UsageError(f"{args.file}: backing file specified without backing format: "
                             f"pass -F FMT{detected}")
        if not args.unsafe:
            try:
                with open_image(path, backing_fmt, force_share=True) as bb:
                    if size is None:
                        size = bb.size
            except BlockError as exc:
                raise BlockError(f"could not open backing image: {exc}", args.file) from exc
        opts["backing_file"], opts["backing_fmt"] = backing, backing_fmt
    if size is None:
        raise UsageError("image creation needs a size parameter")
    if not args.quiet:       # key-secret=ID is shown, never the secret
        print(formatting_line(args.file, cls.format_name, size, opts))
    create_image(cls.format_name, args.file, size,
                 **img_objects.context().resolve_secret(opts))
    return 0




def cmd_measure(args: argparse.Namespace) -> int:
    out_cls = driver_class(args.output_format)
    opts = img_objects.context().resolve_secret(parse_options(args.options))
    if (args.size is None) == (args.file is None):
        raise UsageError("measure needs either --size SIZE or a source image")
    if args.size is not None:
        result = out_cls.measure(size_arg(args.size), None, **opts)
    else:
        with open_image(args.file, args.format, force_share=args.force_share) as bb:
            result = out_cls.measure(bb.size, ops.iter_allocated_ranges(bb), **opts)
    if args.output == "json":
        dump_json(result)
    else:
        print(f"required size: {result['required']}")
        print(f"fully allocated size: {result['fully-allocated']}")
    return 0


