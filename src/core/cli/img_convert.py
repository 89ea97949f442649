"""``vmforge img convert``."""

from __future__ import annotations

import errno
import os

from vmforge.block import ops
from vmforge.block.backend import BlockBackend, create_image
from vmforge.block.driver import BlockDriver, BlockError, OptionValueError
from vmforge.cli import img_objects, img_words
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
from vmforge.cli.img_words import QemuImgError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

# -- convert ------------------------------------------------------------------------------


def snapshot_param(text: str) -> tuple[str | None, str | None]:
    """``-l``: (id, name) to match; a bare NAME matches an id or else a name (None, NAME)."""
    if not text.startswith("snapshot."):
        return None, text
    found: dict[str, str] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in ("snapshot.id", "snapshot.name"):
            raise QemuImgError(f"Invalid parameter '{key}'",
                               f"Failed in parsing snapshot param '{text}'")
        found[key] = value
    return found.get("snapshot.id"), found.get("snapshot.name")


def _open_snapshot(src: str, fmt: str | None, param: str, force_share: bool) -> BlockBackend:
    """The source as it was in an internal snapshot, read-only (the format's ``snapshot``
    open option, the one ``snapshot -a`` reads a snapshot's tables with)."""
    ident, name = snapshot_param(param)
    with open_image(src, fmt, force_share=force_share) as bb:
        drv, fmt = bb.top, bb.format
        if type(drv).snapshots is BlockDriver.snapshots:
            raise QemuImgError(f"Failed to load snapshot: Block format '{fmt}' used by device "
                               "'' does not support temporarily loading internal snapshots")
        snaps = drv.snapshots()
    if ident is None:          # bdrv_snapshot_load_tmp_by_id_or_name: the id, then the name
        match = [s for s in snaps if s.id == name] or [s for s in snaps if s.name == name]
    else:
        match = [s for s in snaps if s.id == ident and name in (None, s.name)]
    if (ident is None and name is not None and not match) or (ident is not None and not match):
        raise QemuImgError("Failed to load snapshot: Can't find snapshot")
    return open_image(src, fmt, force_share=force_share, snapshot=match[0].id)



def _read_error_handler(salvage: bool, quiet: bool) -> Callable[[int, BaseException], None]:
    """A sector that cannot be read: with ``--salvage`` qemu-img's warning (none with
    ``-q``) and the copy goes on; without, qemu-img's error, naming the first bad byte."""

    def handle(offset: int, exc: BaseException) -> None:
        # QEMU's drivers fail a read as EIO where no errno says more
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            os.strerror(errno.EIO)
        if not salvage:
            raise QemuImgError(f"error while reading at byte {offset}: {reason}") from exc
        if not quiet:
            warn(f"error while reading offset {offset}: {reason}")

    return handle


def cmd_convert(args: argparse.Namespace) -> int:
    *sources, target_arg = args.files
    dst = img_objects.target_filename(target_arg)
    if not sources:
        raise QemuImgError("Must specify image file name")
    if args.target_is_zero and not args.no_create:
        raise QemuImgError("--target-is-zero requires use of -n flag")
    if args.parallel is not None and not 1 <= args.parallel <= 16:
        raise QemuImgError("Invalid number of coroutines. Allowed number of coroutines is "
                           "between 1 and 16")
    sparse_words = "Invalid buffer size for sparse output specified."
    min_sparse = 4096
    if args.sparse_size is not None:
        min_sparse = size_arg(args.sparse_size, lambda: QemuImgError(
            f"{sparse_words} You may use k, M, G, T, P or E suffixes for",
            "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."))
    if min_sparse % 512 or min_sparse > 16 << 20:
        raise QemuImgError(f"{sparse_words} Valid sizes are multiples of 512 up to 16777216. "
                           "Select 0 to disable sparse detection (fully allocates output).")
    for src in sources:
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            raise UsageError(f"source and target are the same file: {dst}")
    out_cls = format_class(args.output_format)
    if args.compress and not out_cls.supports_compressed_writes:
        raise QemuImgError("Compression not supported for this file format")
    create_opts: dict[str, Any] = parse_options(args.options)
    if args.backing:
        if not out_cls.supports_backing:
            raise QemuImgError("Backing file not supported for file format "
                               f"'{out_cls.format_name}'")
        if len(sources) != 1:
            raise QemuImgError("Having a backing file for the target makes no sense when "
                               "concatenating multiple input images")
        if args.no_create or args.compress:
            raise UsageError("-B takes neither -n nor -c")
        if not args.backing_format:
            # qemu-img 7.2 probes nothing here: its create refuses, in these words
            raise UsageError("Use of backing file requires explicit backing format")
        create_opts.update(backing_file=args.backing, backing_fmt=args.backing_format)
    if args.snapshot is not None and len(sources) > 1:
        raise QemuImgError("No support for concatenating multiple snapshot")
    opened: list[BlockBackend] = []
    try:
        for src in sources:
            opened.append(open_image(src, args.format, force_share=args.force_share)
                          if args.snapshot is None else
                          _open_snapshot(src, args.format, args.snapshot, args.force_share))
        total = sum(bb.size for bb in opened)
        secret = img_objects.context().resolve_secret(create_opts)
        zero_init = True   # the new target reads as zeros (qemu-img's has_zero_init)
        fill = out_cls.create_options.get("zero_fill")
        if fill is not None and not args.no_create:  # luks: its zeros are written at create:
            given = [v for k, v in secret.items() if k.replace("-", "_") == "zero_fill"]
            try:                                                     # the copy writes them
                zero_init = fill.parse(given[-1]) if given else False   # once, not twice
            except ValueError:
                zero_init = True                # (create refuses it, in its own words)
            secret.setdefault("zero_fill", zero_init)
        if not args.no_create:
            with file_protocol_options(dst, secret, warn) as format_opts:
                try:
                    create_image(out_cls.format_name, dst, total, **format_opts)
                except OptionValueError as exc:      # qemu-img's words, as it words them
                    raise (QemuImgError(exc.words) if exc.typed else QemuImgError(
                        f"{target_arg}: error while converting {out_cls.format_name}: "
                        f"{exc.words}")) from None
        try:
            target = BlockBackend.open(dst, out_cls.format_name, readonly=False,
                                       cache=args.cache, **({"passphrase": secret["passphrase"]}
                                                            if "passphrase" in secret else {}))
        except BlockError as exc:
            raise img_words.open_failed(target_arg, exc, out_cls.format_name) from exc
        opened.append(target)
        bar = ProgressBar() if args.progress else None
        workers = args.parallel if args.parallel else 2
        ops.convert(opened[:-1], target, target_is_zero=(not args.no_create and zero_init) or
                    args.target_is_zero, min_sparse=min_sparse, compress=args.compress,
                    workers=workers, progress=bar, top_only=bool(args.backing),
                    on_read_error=_read_error_handler(args.salvage, args.quiet))
        if bar is not None:
            bar.finish()
    finally:
        for bb in reversed(opened):
            bb.close()
    return 0


