"""``vmforge img``: qemu-img's sub-commands over vmforge's block layer.

The flags, the human output and the JSON keys follow qemu-img, so scripts
written for one work with the other.  Formats are plugins (``-f``/``-O``
name an entry point of ``vmforge.block``); without ``-f`` the format is
probed, and raw is never guessed for a writable open.

Exit codes: 0 success, 1 error; ``check`` 2 corruptions, 3 leaks, 63 no
check for that format; ``compare`` 1 differ, 2 cannot open, 4 cannot read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from vmforge.block import ops
from vmforge.block.backend import CACHE_MODES, BlockBackend, create_image, resolve_backing
from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    BlockStatus,
    CreateOption,
    ImageInfo,
    SnapshotInfo,
    UnsupportedOperation,
    parse_size,
)
from vmforge.block.probe import RAW_FORMAT, driver_class
from vmforge.cli import img_objects
from vmforge.errors import VmforgeError

PROG = "vmforge img"
#: qemu-img's order of the keys of ``info --output json``
_INFO_KEYS = ("snapshots", "backing-filename-format", "virtual-size", "filename",
              "cluster-size", "format", "actual-size", "format-specific",
              "full-backing-filename", "backing-filename", "dirty-flag")

#: the order qemu-img prints ``check --output json`` in (the rest follow)
_CHECK_KEYS = ("image-end-offset", "compressed-clusters", "total-clusters", "check-errors",
               "allocated-clusters", "filename", "format", "fragmented-clusters")


class UsageError(VmforgeError):
    """A wrong combination of arguments."""


# -- small helpers ------------------------------------------------------------------------


def size_to_str(value: int) -> str:
    """qemu's ``size_to_str``: 3 significant digits and a binary unit (``4 MiB``)."""
    _, exp = math.frexp(value / (1000.0 / 1024.0))
    i = max(0, int((exp - 1) / 10))
    i = min(i, 6)
    return f"{value / (1 << (10 * i)):0.3g} {('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[i]}B"


def parse_options(items: list[str]) -> dict[str, str]:
    """``-o a=1,b=2 -o c=3`` -> dict (``,,`` is a literal comma, ``help`` a flag)."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.replace(",,", "\0").split(","):
            part = part.replace("\0", ",").strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            out[key.strip()] = value if sep else ("help" if key.strip() == "help" else "on")
    return out


def _open(path: str, fmt: str | None, *, readonly: bool = True, force_share: bool = False,
          backing: bool = True, **options: Any) -> BlockBackend:
    path, fmt, extra = img_objects.context().resolve_image(path, fmt)   # --image-opts
    return BlockBackend.open(path, fmt, readonly=readonly, force_share=force_share,
                             backing=backing, **extra, **options)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"invalid size: {exc}") from None


class ProgressBar:
    """qemu-img's ``-p`` progress: ``    (42.00/100%)`` redrawn in place on stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.last = -1.0

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        if pct - self.last >= 1.0 or (pct >= 100.0 > self.last):
            self.last = pct
            self.stream.write(f"    ({pct:.2f}/100%)\r")
            self.stream.flush()

    def finish(self) -> None:
        self(1, 1)
        self.stream.write("\n")
        self.stream.flush()


def _dump_json(obj: Any) -> None:
    print(json.dumps(obj, indent=4))


# -- info ---------------------------------------------------------------------------------


def snapshot_table(snaps: list[SnapshotInfo]) -> list[str]:
    """The ``Snapshot list:`` table of qemu-img (``snapshot -l`` and ``info``)."""
    lines = ["Snapshot list:",
             f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"]
    for s in snaps:
        date = datetime.datetime.fromtimestamp(s.date_sec).strftime("%Y-%m-%d %H:%M:%S")
        icount = "" if s.icount is None else str(s.icount)
        lines.append(f"{s.id:<10}{s.name:<17}{size_to_str(s.vm_state_size):>8}{date:>20}"
                     f"{_clock(s.vm_clock_nsec):>13}{icount:>11}")
    return lines


def _snapshot_json(s: SnapshotInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.icount is not None:
        out["icount"] = s.icount
    out.update({"vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000, "name": s.name,
                "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                "vm-clock-sec": s.vm_clock_nsec // 1_000_000_000, "id": s.id,
                "vm-state-size": s.vm_state_size})
    return out


def info_json(info: ImageInfo, snapshots: list[SnapshotInfo] | None = None) -> dict[str, Any]:
    """``info --output json`` of one image, qemu-img's keys in qemu-img's order."""
    raw = info.to_json()
    if snapshots:
        raw["snapshots"] = [_snapshot_json(s) for s in snapshots]
    if info.backing_filename:
        raw["full-backing-filename"] = resolve_backing(info.filename, info.backing_filename)
    out = {k: raw.pop(k) for k in _INFO_KEYS if k in raw}
    out.update(raw)
    return out


def info_human(info: ImageInfo, snapshots: list[SnapshotInfo] | None = None) -> str:
    lines = [f"image: {info.filename}", f"file format: {info.format}",
             f"virtual size: {size_to_str(info.virtual_size)} ({info.virtual_size} bytes)",
             f"disk size: {size_to_str(info.actual_size)}"]
    if info.cluster_size is not None:
        lines.append(f"cluster_size: {info.cluster_size}")
    if info.backing_filename:
        full = resolve_backing(info.filename, info.backing_filename)
        extra = f" (actual path: {full})" if full != info.backing_filename else ""
        lines.append(f"backing file: {info.backing_filename}{extra}")
    if info.backing_format:
        lines.append(f"backing file format: {info.backing_format}")
    if info.dirty:
        lines.append("dirty flag: true")
    if snapshots:
        lines.extend(snapshot_table(snapshots))
    if info.format_specific:
        lines.append("Format specific information:")
        lines.extend(_human_tree(info.format_specific, 1))
    return "\n".join(lines)


def _human_tree(data: dict[str, Any], level: int) -> list[str]:
    out = []
    pad = "    " * level
    for key, value in data.items():
        name = key.replace("-", " ")
        if isinstance(value, dict):
            out.append(f"{pad}{name}:")
            out.extend(_human_tree(value, level + 1))
        elif isinstance(value, list):
            out.append(f"{pad}{name}:")
            for item in value:
                if isinstance(item, dict):
                    out.extend(_human_tree(item, level + 2))
                else:
                    out.append(f"{pad}    [{item}]")
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            out.append(f"{pad}{name}: {text}")
    return out


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.file, args.format, force_share=args.force_share,
               backing=args.backing_chain) as bb:
        infos = [(la.driver.info(), la.driver.snapshots()) for la in bb.layers]
    if args.output == "json":
        out = [info_json(*i) for i in infos]
        _dump_json(out if args.backing_chain else out[0])
    else:
        print("\n\n".join(info_human(*i) for i in infos))
    return 0


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
    size = _size_arg(args.size) if args.size is not None else None
    if "size" in opts:
        size = _size_arg(opts.pop("size"))
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
                with _open(path, backing_fmt, force_share=True) as bb:
                    if size is None:
                        size = bb.size
            except BlockError as exc:
                raise BlockError(f"could not open backing image: {exc}", args.file) from exc
        opts["backing_file"], opts["backing_fmt"] = backing, backing_fmt
    if size is None:
        raise UsageError("image creation needs a size parameter")
    if not args.quiet:       # key-secret=ID is shown, never the secret
        shown = " ".join(f"{k}={_show_value(v)}" for k, v in opts.items() if v is not None)
        print(f"Formatting '{args.file}', fmt={cls.format_name} size={size}"
              + (f" {shown}" if shown else ""))
    create_image(cls.format_name, args.file, size,
                 **img_objects.context().resolve_secret(opts))
    return 0


def _show_value(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


# -- convert ------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    *sources, dst = args.files
    if not sources:
        raise UsageError("convert needs a source and a target file")
    if args.target_is_zero and not args.no_create:
        raise UsageError("--target-is-zero needs -n (a new image already reads as zeros)")
    if args.parallel is not None and not 1 <= args.parallel <= 16:
        raise UsageError("invalid number of coroutines (-m): allowed is 1 to 16, "
                         f"not {args.parallel}")
    min_sparse = _size_arg(args.sparse_size) if args.sparse_size is not None else 4096
    if min_sparse % 512 and min_sparse:
        raise UsageError("-S must be 0 or a multiple of 512")
    for src in sources:
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            raise UsageError(f"source and target are the same file: {dst}")
    out_cls = driver_class(args.output_format)
    if args.compress and not out_cls.supports_compressed_writes:
        raise UsageError(f"format {out_cls.format_name} does not support compressed writes")
    create_opts: dict[str, Any] = parse_options(args.options)
    if args.backing:
        if not out_cls.supports_backing:
            raise UsageError(f"format {out_cls.format_name} does not support backing files")
        if args.no_create or args.compress or len(sources) != 1:
            raise UsageError("-B takes one source, and neither -n nor -c")
        if not args.backing_format:
            raise UsageError("-B needs the backing format (-F FMT)")
        create_opts.update(backing_file=args.backing, backing_fmt=args.backing_format)
    opened: list[BlockBackend] = []
    try:
        for src in sources:
            opened.append(_open(src, args.format, force_share=args.force_share))
        total = sum(bb.size for bb in opened)
        secret = img_objects.context().resolve_secret(create_opts)
        if not args.no_create:
            create_image(out_cls.format_name, dst, total, **secret)
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


# -- check --------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    repair = args.repair
    # for_check: a read-write open for repairs must work on an image its format
    # refuses otherwise (qcow2's corrupt bit), as QEMU's BDRV_O_CHECK
    opts = {"for_check": True} if repair else {}
    with _open(args.file, args.format, readonly=repair is None, force_share=args.force_share,
               backing=False, **opts) as bb:
        drv = bb.top
        if type(drv).check is BlockDriver.check:
            print(f"{PROG}: this image format ({drv.format_name}) does not support checks",
                  file=sys.stderr)
            return 63
        result = drv.check(repair)
    if args.output == "json":
        raw = result.to_json()
        out = {k: raw.pop(k) for k in _CHECK_KEYS if k in raw}
        out.update(raw)
        _dump_json(out)
    else:
        for msg in result.messages:
            print(msg, file=sys.stderr)
        if result.corruptions_fixed or result.leaks_fixed:
            print("The following inconsistencies were found and repaired:\n\n"
                  f"    {result.leaks_fixed} leaked clusters\n"
                  f"    {result.corruptions_fixed} corruptions\n\n"
                  "Double checking the fixed image now...")
        if result.clean:
            print("No errors were found on the image.")
        if result.corruptions:
            print(f"\n{result.corruptions} errors were found on the image.\nData may be "
                  "corrupted, or further writes to the image may corrupt it.")
        if result.leaks:
            print(f"\n{result.leaks} leaked clusters were found on the image.\nThis means "
                  "waste of disk space, but no harm to data.")
        if result.check_errors:
            print(f"\n{result.check_errors} internal errors have occurred during the check.")
        if result.total_clusters is not None and result.allocated_clusters is not None:
            alloc, total = result.allocated_clusters, result.total_clusters
            frag, comp = result.fragmented_clusters or 0, result.compressed_clusters or 0
            print(f"{alloc}/{total} = {100.0 * alloc / total if total else 0:0.2f}% allocated, "
                  f"{100.0 * frag / alloc if alloc else 0:0.2f}% fragmented, "
                  f"{100.0 * comp / alloc if alloc else 0:0.2f}% compressed clusters")
        if result.image_end_offset is not None:
            print(f"Image end offset: {result.image_end_offset}")
    if result.check_errors:
        return 1
    if result.corruptions:
        return 2
    if result.leaks:
        return 3
    return 0


# -- compare ------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        a = _open(args.file_a, args.format_a, force_share=args.force_share)
    except VmforgeError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            b = _open(args.file_b, args.format_b, force_share=args.force_share)
        except VmforgeError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        with b:
            if a.size != b.size and not args.strict:
                print("Warning: Image size mismatch!")
            try:
                result = ops.compare(a, b, strict=args.strict)
            except BlockError as exc:
                print(f"{PROG}: error while reading: {exc}", file=sys.stderr)
                return 4
    finally:
        a.close()
    if result.identical:
        print("Images are identical.")
        return 0
    if args.strict and result.size_mismatch and result.offset is None:
        print("Strict mode: Image size mismatch!")
    elif result.status_mismatch:
        print(f"Strict mode: Offset {result.offset} block status mismatch!")
    else:
        print(f"Content mismatch at offset {result.offset}!")
    return 1


# -- map ----------------------------------------------------------------------------------


def _hex(v: int) -> str:
    return f"{v:#x}" if v else "0"


def cmd_map(args: argparse.Namespace) -> int:
    with _open(args.file, args.format, force_share=args.force_share) as bb:
        # streamed: a fragmented image has millions of extents (qemu-img streams too)
        if args.output == "json":
            _map_json(bb, sys.stdout)
        else:
            _map_human(bb, sys.stdout)
    return 0


def _map_json(bb: BlockBackend, out: TextIO) -> None:
    sep = "["
    lines: list[str] = []
    for e in bb.block_status():
        row = (f'{sep}{{ "start": {e.offset}, "length": {e.length}, "depth": {e.depth}, '
               f'"present": {_JSON_BOOL[e.is_allocated]}, "zero": {_JSON_BOOL[e.is_zero]}, '
               f'"data": {_JSON_BOOL[e.is_data]}')
        if e.host_offset is not None:
            row += f', "offset": {e.host_offset}'
        lines.append(row + "}")
        sep = ",\n"
        if len(lines) >= 4096:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines) + ("]\n" if sep != "[" else "[]\n"))


_JSON_BOOL = {True: "true", False: "false"}


def _map_human(bb: BlockBackend, out: TextIO) -> None:
    out.write(f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File\n")
    last: list[Any] | None = None     # the run being merged: offset, length, host, file

    def emit(run: list[Any]) -> None:
        off, length, host, name = run
        out.write(f"{_hex(off):<16}{_hex(length):<16}{_hex(host):<16}{name}\n")

    for e in bb.block_status():
        if e.is_data and e.status & BlockStatus.COMPRESSED:  # qemu-img refuses these too
            if last is not None:
                emit(last)
            raise UsageError("the image contains compressed clusters, which have no "
                             "place in the file to show: use --output json")
        if not e.is_data or e.host_offset is None:
            continue
        if (last and last[0] + last[1] == e.offset and last[2] + last[1] == e.host_offset
                and last[3] == e.filename):
            last[1] += e.length
        else:
            if last is not None:
                emit(last)
            last = [e.offset, e.length, e.host_offset, e.filename]
    if last is not None:
        emit(last)


# -- resize, snapshot, rebase, commit, measure ------------------------------------------------


def cmd_resize(args: argparse.Namespace) -> int:
    if len(args.size) != 1:
        raise UsageError("resize needs FILE and one [+-]SIZE")
    text = args.size[0]
    with _open(args.file, args.format, readonly=False, backing=False) as bb:
        cur = bb.size
        if text[:1] in "+-":
            delta = _size_arg(text[1:])
            new = cur + delta if text[0] == "+" else cur - delta
        else:
            new = _size_arg(text)
        if new < 0:
            raise UsageError("new image size must be positive")
        if new < cur and not args.shrink:
            raise UsageError("use the --shrink option to perform a shrink operation (data "
                             "beyond the new end of the image is lost)")
        bb.truncate(new)
    if not args.quiet:
        print("Image resized.")
    return 0


def _clock(ns: int) -> str:
    secs, ms = divmod(ns // 1_000_000, 1000)
    mins, s = divmod(secs, 60)
    h, m = divmod(mins, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cmd_snapshot(args: argparse.Namespace) -> int:
    actions = [(flag, value) for flag, value in (("-c", args.create), ("-a", args.apply),
                                                  ("-d", args.delete)) if value is not None]
    if len(actions) + bool(args.list) != 1:
        raise UsageError("snapshot takes exactly one of -l, -c NAME, -a NAME, -d NAME")
    if args.list:
        with _open(args.file, args.format, force_share=args.force_share, backing=False) as bb:
            snaps = bb.top.snapshots()
        if snaps:
            print("\n".join(snapshot_table(snaps)))
        return 0
    if args.force_share:
        raise UsageError("-U can only be used to list snapshots")
    flag, name = actions[0]
    with _open(args.file, args.format, readonly=False, backing=False) as bb:
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
        with _open(args.file, args.format, readonly=False, backing=False) as bb:
            bb.top.change_backing_file(backing, fmt if backing else None)
        return 0
    with _open(args.file, args.format, readonly=False) as top:
        new = None
        if backing:
            new = _open(resolve_backing(args.file, backing), args.backing_format)
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
    with _open(args.file, args.format, readonly=False) as top:
        if len(top.layers) < 2:
            raise UsageError(f"{args.file}: image does not have a backing file")
        base_layer = top.layers[1]
        if top.top.backing_format is None and base_layer.format == RAW_FORMAT:
            raise UsageError(f"the format of the backing file {base_layer.filename} was probed "
                             "as raw, which is never written; record it first with "
                             f"'vmforge img rebase -u -b {top.top.backing_filename} -F raw "
                             f"{args.file}'")
        with _open(base_layer.filename, base_layer.format, readonly=False, backing=False) as base:
            bar = ProgressBar() if args.progress else None
            ops.commit(top, base, bar)
            if bar is not None:
                bar.finish()
    if not args.quiet:
        print("Image committed.")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    out_cls = driver_class(args.output_format)
    opts = img_objects.context().resolve_secret(parse_options(args.options))
    if (args.size is None) == (args.file is None):
        raise UsageError("measure needs either --size SIZE or a source image")
    if args.size is not None:
        result = out_cls.measure(_size_arg(args.size), None, **opts)
    else:
        with _open(args.file, args.format, force_share=args.force_share) as bb:
            result = out_cls.measure(bb.size, ops.iter_allocated_ranges(bb), **opts)
    if args.output == "json":
        _dump_json(result)
    else:
        print(f"required size: {result['required']}")
        print(f"fully allocated size: {result['fully-allocated']}")
    return 0


# -- the parser ---------------------------------------------------------------------------


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected errors into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            img_objects.configure(args)
            return handler(args)
        except BrokenPipeError:  # the reader went away (| head): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (VmforgeError, ValueError, OSError) as exc:
            if isinstance(exc, UnsupportedOperation | UsageError | BlockError
                          | img_objects.ObjectError):
                print(f"{PROG}: {exc}", file=sys.stderr)
            elif isinstance(exc, OSError):   # one line that names the file, as qemu-img
                name = exc.filename or getattr(args, "file", None) or ""
                print(f"{PROG}: {name}{': ' if name else ''}{exc.strerror or exc}",
                      file=sys.stderr)
            else:
                print(f"{PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a bug, most likely in a format plugin
            print(f"{PROG}: internal error: {type(exc).__name__}: {exc}"
                  + ("" if getattr(args, "verbose", 0) else " (vmforge -v img ... shows the "
                     "traceback)"), file=sys.stderr)
            if getattr(args, "verbose", 0):
                traceback.print_exc()
            return 1

    return run


def _common(p: argparse.ArgumentParser, *, fmt: bool = True, share: bool = True,
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


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``vmforge img`` and its sub-commands."""
    img = subparsers.add_parser("img", help="create, convert, check and inspect disk images",
                                description="qemu-img's sub-commands over vmforge's block "
                                "layer; formats are plugins (vmforge plugins --kind block).")
    sub = img.add_subparsers(dest="img_command", metavar="SUBCOMMAND")
    img.set_defaults(func=lambda args: (img.print_help(), 2)[1])

    def add(name: str, handler: Callable[[argparse.Namespace], int],
            help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=_run(handler))
        return p

    p = add("info", cmd_info, "show facts about an image")
    _common(p, output=True)
    p.add_argument("--backing-chain", action="store_true", help="every image of the chain")
    p.add_argument("file")

    p = add("create", cmd_create, "create a new image")
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

    p = add("convert", cmd_convert, "copy an image, possibly to another format")
    _common(p, quiet=True)
    p.add_argument("-O", dest="output_format", default="raw", metavar="FMT",
                   help="target format (default raw)")
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

    p = add("check", cmd_check, "check an image's consistency")
    _common(p, output=True)
    p.add_argument("-r", dest="repair", choices=("leaks", "all"), help="repair what is found")
    p.add_argument("file")

    p = add("compare", cmd_compare, "compare two images' contents")
    p.add_argument("-f", dest="format_a", metavar="FMT")
    p.add_argument("-F", dest="format_b", metavar="FMT")
    p.add_argument("-s", dest="strict", action="store_true", help="strict: sizes and "
                   "allocation must match too")
    p.add_argument("-U", "--force-share", action="store_true", dest="force_share")
    p.add_argument("file_a", metavar="A")
    p.add_argument("file_b", metavar="B")

    p = add("map", cmd_map, "show the allocation of an image")
    _common(p, output=True)
    p.add_argument("file")

    p = add("resize", cmd_resize, "change the virtual size")
    _common(p, share=False, quiet=True)
    p.add_argument("--shrink", action="store_true", help="allow shrinking (loses data)")
    p.add_argument("file")
    p.add_argument("size", nargs=argparse.REMAINDER, metavar="[+-]SIZE")

    p = add("snapshot", cmd_snapshot, "list, create, apply or delete internal snapshots")
    _common(p)
    p.add_argument("-l", dest="list", action="store_true", help="list snapshots")
    p.add_argument("-c", dest="create", metavar="NAME", help="create a snapshot")
    p.add_argument("-a", dest="apply", metavar="NAME", help="revert the disk to a snapshot")
    p.add_argument("-d", dest="delete", metavar="NAME", help="delete a snapshot")
    p.add_argument("file")

    p = add("rebase", cmd_rebase, "change the backing file")
    _common(p, share=False)
    p.add_argument("-b", dest="backing", required=True, metavar="BACKING",
                   help="the new backing file ('' for none)")
    p.add_argument("-F", dest="backing_format", metavar="FMT")
    p.add_argument("-u", dest="unsafe", action="store_true",
                   help="only rewrite the backing file name")
    p.add_argument("-p", "--progress", dest="progress", action="store_true")
    p.add_argument("file")

    p = add("commit", cmd_commit, "write an image's data into its backing file")
    _common(p, share=False, quiet=True)
    p.add_argument("-p", "--progress", dest="progress", action="store_true")
    p.add_argument("file")

    p = add("measure", cmd_measure, "how large a new image would be")
    _common(p, output=True)
    p.add_argument("-O", dest="output_format", default="raw", metavar="FMT",
                   help="format to measure for (default raw)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="its create options k=v,...")
    p.add_argument("--size", metavar="SIZE", help="a new image of this size (no source)")
    p.add_argument("file", nargs="?")
