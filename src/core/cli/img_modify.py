"""``vmforge img`` sub-commands that change an image: resize, snapshot, rebase, commit."""

from __future__ import annotations

from vmforge.block.backend import resolve_backing
from vmforge.block.driver import UnsupportedOperation
from vmforge.block.probe import RAW_FORMAT
from vmforge.cli import img_words
from vmforge.cli.img_common import (
    ProgressBar,
    UsageError,
    open_image,
    prog,
    size_arg,
)
from vmforge.cli.img_report import snapshot_table
from vmforge.cli.img_words import QemuImgError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

# -- resize, snapshot, rebase, commit, measure ------------------------------------------------


def cmd_resize(args: argparse.Namespace) -> int:
    text = args.size
    sign = text[:1] if text[:1] in "+-" else ""
    value = size_arg(text[len(sign):], img_words.bad_resize_size)  # before the open, as qemu
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        cur = bb.size
        new = cur + value if sign == "+" else cur - value if sign == "-" else value
        if new <= 0:                    # qemu-img: "total_size <= 0"
            raise QemuImgError("New image size must be positive")
        if new < cur and not args.shrink:
            raise QemuImgError("Use the --shrink option to perform a shrink operation.",
                               "warning: Shrinking an image will delete all data beyond the "
                               "shrunken image's end. Before performing such an operation, "
                               "make sure there is no important data there.")
        bb.truncate(new)
    if not args.quiet:
        print("Image resized.")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    actions = [(flag, value) for flag, value in (("-c", args.create), ("-a", args.apply),
                                                  ("-d", args.delete)) if value is not None]
    if len(actions) + bool(args.list) > 1:
        raise img_words.usage("Cannot mix '-l', '-a', '-c', '-d'", prog())
    if not actions:
        with open_image(args.file, args.format, force_share=args.force_share, backing=False) as bb:
            snaps = bb.top.snapshots()
        if snaps and args.list:     # without -l qemu-img opens the image and does nothing
            print("\n".join(snapshot_table(snaps)))
        return 0
    if args.force_share:
        raise QemuImgError(f"Could not open '{args.file}': force-share=on can only be used "
                           "with read-only images")
    flag, name = actions[0]
    with open_image(args.file, args.format, readonly=False, backing=False) as bb:
        drv = bb.top
        known = any(name in (s.id, s.name) for s in drv.snapshots())
        if flag == "-a" and not known:      # qemu-img's words for a name it does not find
            raise QemuImgError(f"Could not apply snapshot '{name}': Failed to load snapshot: "
                               "No such file or directory")
        if flag == "-d" and not known:
            raise QemuImgError(f"Could not delete snapshot '{name}': snapshot not found")
        call = {"-c": drv.create_snapshot, "-a": drv.revert_snapshot,
                "-d": drv.delete_snapshot}[flag]
        try:
            call(name)
        except UnsupportedOperation:
            if flag != "-c":
                raise
            raise QemuImgError(f"Could not create snapshot '{name}': -95 (Operation not "
                               "supported)") from None
    return 0


def cmd_rebase(args: argparse.Namespace) -> int:
    if args.backing is None and not args.unsafe:
        raise img_words.usage("Must specify backing file (-b) or use unsafe mode (-u)", prog())
    backing = args.backing or None
    if backing and not args.backing_format:   # qemu-img 7.2 records it, never probes it
        raise QemuImgError(f"Could not change the backing file to '{backing}': backing "
                           "format must be specified")
    if args.unsafe:
        with open_image(args.file, args.format, readonly=False, backing=False) as bb:
            bb.top.change_backing_file(backing, args.backing_format if backing else None)
        return 0
    with open_image(args.file, args.format, readonly=False) as top:
        new = None
        if backing:
            try:
                new = open_image(resolve_backing(args.file, backing), args.backing_format)
            except QemuImgError as exc:
                raise img_words.open_failed(backing, exc.__cause__ or exc, args.backing_format,
                                            "Could not open new backing file") from exc
        try:
            from vmforge.block import ops  # here: resize and snapshot do without it

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
            raise QemuImgError("Image does not have a backing file")
        base_layer = top.layers[1]
        if top.top.backing_format is None and base_layer.format == RAW_FORMAT:
            raise UsageError(f"the format of the backing file {base_layer.filename} was probed "
                             "as raw, which is never written; record it first with "
                             f"'vmforge img rebase -u -b {top.top.backing_filename} -F raw "
                             f"{args.file}'")
        with open_image(base_layer.filename, base_layer.format, readonly=False,
                        backing=False) as base:
            from vmforge.block import ops

            bar = ProgressBar() if args.progress else None
            ops.commit(top, base, bar)
            if bar is not None:
                bar.finish()
    if not args.quiet:
        print("Image committed.")
    return 0


