"""``vmforge img`` sub-commands that report: info, check, compare, map."""

from __future__ import annotations

import sys

from vmforge.block.backend import BlockBackend, resolve_backing
from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    BlockStatus,
    CheckResult,
    Extent,
    ImageInfo,
    KeyRequired,
    SnapshotInfo,
)
from vmforge.cli.img_common import (
    clock,
    dump_json,
    error,
    hexnum,
    open_image,
    qdict_order,
    qprint,
    report,
    size_to_str,
)
from vmforge.cli.img_words import QemuImgError
from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any, TextIO

# -- info ---------------------------------------------------------------------------------


def snapshot_table(snaps: list[SnapshotInfo]) -> list[str]:
    """The ``Snapshot list:`` table of qemu-img (``snapshot -l`` and ``info``)."""
    import datetime  # here, not at start-up: most images have no snapshot

    lines = ["Snapshot list:",
             f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"]
    for s in snaps:
        date = datetime.datetime.fromtimestamp(s.date_sec).strftime("%Y-%m-%d %H:%M:%S")
        icount = "" if s.icount is None else str(s.icount)
        lines.append(f"{s.id:<10}{s.name:<17}{size_to_str(s.vm_state_size):>8}{date:>20}"
                     f"{clock(s.vm_clock_nsec):>13}{icount:>11}")
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
    if info.actual_size < 0:    # no file underneath (an NBD export): qemu-img has neither
        del raw["actual-size"], raw["dirty-flag"]
    if snapshots:
        raw["snapshots"] = [_snapshot_json(s) for s in snapshots]
    if info.backing_filename:
        raw["full-backing-filename"] = resolve_backing(info.filename, info.backing_filename)
    return raw


def info_human(info: ImageInfo, snapshots: list[SnapshotInfo] | None = None) -> str:
    lines = [f"image: {info.filename}", f"file format: {info.format}",
             f"virtual size: {size_to_str(info.virtual_size)} ({info.virtual_size} bytes)",
             "disk size: " + (size_to_str(info.actual_size) if info.actual_size >= 0
                              else "unavailable")]
    if info.cluster_size is not None:
        lines.append(f"cluster_size: {info.cluster_size}")
    if info.encrypted:
        lines.append("encrypted: yes")
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
        lines.extend(_human_tree(qdict_order(info.format_specific), 1))   # QDict order
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
            for i, item in enumerate(value):
                if isinstance(item, dict):     # qemu's dump_qlist: an index line, then it
                    out.append(f"{pad}    [{i}]:")
                    out.extend(_human_tree(item, level + 2))
                else:                          # ... or the index and the value on one line
                    text = str(item).lower() if isinstance(item, bool) else str(item)
                    out.append(f"{pad}    [{i}]: {text}")
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            out.append(f"{pad}{name}: {text}")
    return out


def cmd_info(args: argparse.Namespace) -> int:
    try:
        bb = open_image(args.file, args.format, force_share=args.force_share,
                        backing=args.backing_chain)
    except QemuImgError as exc:
        if not isinstance(exc.__cause__, KeyRequired):
            raise
        # an encrypted image without its key: its header, as qemu-img (BDRV_O_NO_IO)
        bb = open_image(args.file, args.format, force_share=args.force_share,
                        backing=args.backing_chain, no_io=True)
    with bb:
        infos = [(la.driver.info(), la.driver.snapshots()) for la in bb.layers]
    if args.output == "json":
        out = [info_json(*i) for i in infos]
        dump_json(out if args.backing_chain else out[0])
    else:
        print("\n\n".join(info_human(*i) for i in infos))
    return 0


# -- check --------------------------------------------------------------------------------


def check_human(result: CheckResult) -> str:
    """What ``check`` prints (qemu-img.c's ``dump_human_image_check``)."""
    out = ""
    if result.corruptions_fixed or result.leaks_fixed:
        out += ("The following inconsistencies were found and repaired:\n\n"
                f"    {result.leaks_fixed} leaked clusters\n"
                f"    {result.corruptions_fixed} corruptions\n\n"
                "Double checking the fixed image now...\n")
    if not (result.corruptions or result.leaks or result.check_errors):
        out += "No errors were found on the image.\n"
    if result.corruptions:
        out += (f"\n{result.corruptions} errors were found on the image.\nData may be "
                "corrupted, or further writes to the image may corrupt it.\n")
    if result.leaks:
        out += (f"\n{result.leaks} leaked clusters were found on the image.\nThis means "
                "waste of disk space, but no harm to data.\n")
    if result.check_errors:
        out += f"\n{result.check_errors} internal errors have occurred during the check.\n"
    alloc, total = result.allocated_clusters or 0, result.total_clusters or 0
    if total and alloc:      # qemu-img shows the statistics only when both are known
        frag, comp = result.fragmented_clusters or 0, result.compressed_clusters or 0
        out += (f"{alloc}/{total} = {100.0 * alloc / total:0.2f}% allocated, "
                f"{100.0 * frag / alloc:0.2f}% fragmented, "
                f"{100.0 * comp / alloc:0.2f}% compressed clusters\n")
    if result.image_end_offset:
        out += f"Image end offset: {result.image_end_offset}\n"
    return out


def cmd_check(args: argparse.Namespace) -> int:
    repair = args.repair
    # for_check: a read-write open for repairs must work on an image its format
    # refuses otherwise (qcow2's corrupt bit), as QEMU's BDRV_O_CHECK
    opts = {"for_check": True} if repair else {}
    with open_image(args.file, args.format, readonly=repair is None, force_share=args.force_share,
               backing=False, **opts) as bb:
        drv = bb.top
        if type(drv).check is BlockDriver.check:
            error("This image format does not support checks")
            return 63
        result = drv.check(repair)
    for msg in result.messages:     # the format's findings: stderr, in both outputs
        print(msg, file=sys.stderr)
    if args.output == "json":
        raw = result.to_json()
        if not raw.get("image-end-offset"):    # qemu-img leaves out a zero offset
            raw.pop("image-end-offset", None)
        dump_json(raw)
    elif not args.quiet:
        print(check_human(result), end="")
    if result.check_errors:
        return 1
    if result.corruptions:
        return 2
    if result.leaks:
        return 3
    return 0


# -- compare ------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from vmforge.block import ops  # here: info, check and map do without it

    try:
        a = open_image(args.file_a, args.format_a, force_share=args.force_share)
    except VmforgeError as exc:
        report(exc)
        return 2
    try:
        try:
            b = open_image(args.file_b, args.format_b, force_share=args.force_share)
        except VmforgeError as exc:
            report(exc)
            return 2
        with b:
            if a.size != b.size and not args.strict:
                qprint(args.quiet, "Warning: Image size mismatch!")
            try:
                result = ops.compare(a, b, strict=args.strict)
            except BlockError as exc:
                error(f"error while reading: {exc}")
                return 4
    finally:
        a.close()
    if result.identical:
        qprint(args.quiet, "Images are identical.")
        return 0
    if args.strict and result.size_mismatch and result.offset is None:
        qprint(args.quiet, "Strict mode: Image size mismatch!")
    elif result.status_mismatch:
        qprint(args.quiet, f"Strict mode: Offset {result.offset} block status mismatch!")
    else:
        qprint(args.quiet, f"Content mismatch at offset {result.offset}!")
    return 1


# -- map ----------------------------------------------------------------------------------


def cmd_map(args: argparse.Namespace) -> int:
    with open_image(args.file, args.format, force_share=args.force_share) as bb:
        # streamed: a fragmented image has millions of extents (qemu-img streams too)
        if args.output == "json":
            _map_json(bb, sys.stdout)
        else:
            _map_human(bb, sys.stdout)
    return 0


def _map_extents(bb: BlockBackend) -> Iterator[Extent]:
    top = bb.layers[0].driver
    if type(top).block_status_in_map or not bb.size:
        yield from bb.block_status()
        return
    # QEMU's generic block status for a driver without one: data, allocated, no offset
    yield Extent(0, bb.size, BlockStatus.DATA | BlockStatus.ALLOCATED, None, 0, top.filename)


def _map_json(bb: BlockBackend, out: TextIO) -> None:
    sep = "["
    lines: list[str] = []
    for e in _map_extents(bb):
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
        out.write(f"{hexnum(off):<16}{hexnum(length):<16}{hexnum(host):<16}{name}\n")

    for e in _map_extents(bb):
        if e.is_data and (e.status & BlockStatus.COMPRESSED or e.host_offset is None):
            if last is not None:      # no place in the file to show: qemu-img refuses
                emit(last)
            raise QemuImgError("File contains external, encrypted or compressed clusters.")
        if not e.is_data or e.is_zero or e.host_offset is None:
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


