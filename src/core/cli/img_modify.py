"""``vmforge img`` sub-commands that change an image: resize, snapshot, rebase, commit."""

from __future__ import annotations

import argparse
import os

from vmforge.block import ops
from vmforge.block.backend import resolve_backing
from vmforge.block.probe import RAW_FORMAT
from vmforge.cli.img_common import (
    ProgressBar,
    UsageError,
    open_image,
    size_arg,
)
from vmforge.cli.img_report import snapshot_table

# -- resize, snapshot, rebase, commit, measure ------------------------------------------------


def cmd_resize(args: argparse.Namespace) -> int:
    text = args.size
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        cur = bb.size
        if text[:1] in "+-":
            delta = size_arg(text[1:])
            new = cur + delta if text[0] == "+" else cur - delta
        else:
            new = size_arg(text)
        if new < 0:
            raise UsageError("new image size must be positive")
        if new < cur and not args.shrink:
            raise UsageError("use the --shrink option to perform a shrink operation (data "
                             "beyond the new end of the image is lost)")
        bb.truncate(new)
    if not args.quiet:
        print("Image resized.")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    actions = [(flag, value) for flag, value in (("-c", args.create), ("-a", args.apply),
                                                  ("-d", args.delete)) if value is not None]
    if len(actions) + bool(args.list) != 1:
        raise UsageError("snapshot takes exactly one of -l, -c NAME, -a NAME, -d NAME")
    if args.list:
        with open_image(args.file, args.format, force_share=args.force_share, backing=False) as bb:
            snaps = bb.top.snapshots()
        if snaps:
            print("\n".join(snapshot_table(snaps)))
        return 0
    if args.force_share:
        raise UsageError("-U can only be used to list snapshots")
    flag, name = actions[0]
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        drv = bb.top
        call = {"-c": drv.create_snapshot, "-a": drv.revert_snapshot,
                "-d": drv.delete_snapshot}[flag]
        call(name)
    return 0


def cmd_rebase(args: argparse.Namespace) -> int:
    backing = args.backing or None
    if args.unsafe:
        fmt = args.backing_format
        if backing and not fmt:
            path = resolve_backing(args.file, backing)
            if os.path.exists(path):
                from vmforge.block.probe import probe_format

                fmt = probe_format(path)
        with open_image(args.file, args.format, readonly=False, backing=False) as bb:
            bb.top.change_backing_file(backing, fmt if backing else None)
        return 0
    with open_image(args.file, args.format, readonly=False) as top:
        new = None
        if backing:
            new = open_image(resolve_backing(args.file, backing), args.backing_format)
        try:
            bar = ProgressBar() if args.progress else None
            ops.rebase(top, new, backing, (args.backing_format or new.format) if new else None,
                       bar)
            if bar is not None:
                bar.finish()
        finally:
            if new is not None:
                new.close()
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    with open_image(args.file, args.format, readonly=False) as top:
        if len(top.layers) < 2:
            raise UsageError(f"{args.file}: image does not have a backing file")
        base_layer = top.layers[1]
        if top.top.backing_format is None and base_layer.format == RAW_FORMAT:
            raise UsageError(f"the format of the backing file {base_layer.filename} was probed "
                             "as raw, which is never written; record it first with "
                             f"'vmforge img rebase -u -b {top.top.backing_filename} -F raw "
                             f"{args.file}'")
        with open_image(base_layer.filename, base_layer.format, readonly=False,
                        backing=False) as base:
            bar = ProgressBar() if args.progress else None
            ops.commit(top, base, bar)
            if bar is not None:
                bar.finish()
    if not args.quiet:
        print("Image committed.")
    return 0


