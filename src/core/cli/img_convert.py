"""``vmforge img convert``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from vmforge.block import ops
from vmforge.block.backend import BlockBackend, create_image
from vmforge.cli import img_objects
from vmforge.cli.img_common import (
    ProgressBar,
    UsageError,
    open_image,
    parse_options,
    size_arg,
    warn,
)
from vmforge.cli.img_create import format_class
from vmforge.cli.img_protocol import file_protocol_options

# -- convert ------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    *sources, target_arg = args.files
    dst = img_objects.target_filename(target_arg)
    if not sources:
        raise UsageError("convert needs a source and a target file")
    if args.target_is_zero and not args.no_create:
        raise UsageError("--target-is-zero needs -n (a new image already reads as zeros)")
    if args.parallel is not None and not 1 <= args.parallel <= 16:
        raise UsageError("invalid number of coroutines (-m): allowed is 1 to 16, "
                         f"not {args.parallel}")
    min_sparse = size_arg(args.sparse_size) if args.sparse_size is not None else 4096
    if min_sparse % 512 and min_sparse:
        raise UsageError("-S must be 0 or a multiple of 512")
    for src in sources:
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            raise UsageError(f"source and target are the same file: {dst}")
    out_cls = format_class(args.output_format)
    if args.compress and not out_cls.supports_compressed_writes:
        raise UsageError(f"format {out_cls.format_name} does not support compressed writes")
    create_opts: dict[str, Any] = parse_options(args.options)
    if args.backing:
        if not out_cls.supports_backing:
            raise UsageError(f"format {out_cls.format_name} does not support backing files")
        if args.no_create or args.compress or len(sources) != 1:
            raise UsageError("-B takes one source, and neither -n nor -c")
        if not args.backing_format:
            # qemu-img 7.2 probes nothing here: its create refuses, in these words
            raise UsageError("Use of backing file requires explicit backing format")
        create_opts.update(backing_file=args.backing, backing_fmt=args.backing_format)
    opened: list[BlockBackend] = []
    try:
        for src in sources:
            opened.append(open_image(src, args.format, force_share=args.force_share))
        total = sum(bb.size for bb in opened)
        secret = img_objects.context().resolve_secret(create_opts)
        if not args.no_create:
            with file_protocol_options(dst, secret, warn) as format_opts:
                create_image(out_cls.format_name, dst, total, **format_opts)
        target = BlockBackend.open(dst, out_cls.format_name, readonly=False, cache=args.cache,
                                   **({"passphrase": secret["passphrase"]}
                                      if "passphrase" in secret else {}))
        opened.append(target)
        bar = ProgressBar() if args.progress else None
        workers = args.parallel if args.parallel else 2
        ops.convert(opened[:-1], target, target_is_zero=not args.no_create or
                    args.target_is_zero, min_sparse=min_sparse, compress=args.compress,
                    workers=workers, progress=bar, top_only=bool(args.backing))
        if bar is not None:
            bar.finish()
    finally:
        for bb in reversed(opened):
            bb.close()
    return 0


