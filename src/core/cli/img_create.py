"""``vmforge img create`` and ``measure``: new images and their size."""

from __future__ import annotations

from vmforge.block.backend import create_image, resolve_backing
from vmforge.block.driver import (
    BlockDriver,
    CreateOption,
    OptionValueError,
    parse_size,
)
from vmforge.block.probe import driver_class
from vmforge.cli import img_objects, img_words
from vmforge.cli.img_common import (
    dump_json,
    open_image,
    parse_options,
    prog,
    size_arg,
    warn,
)
from vmforge.cli.img_protocol import file_protocol_options
from vmforge.cli.img_words import QemuImgError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

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


def format_class(name: str, filename: str | None = None) -> type[BlockDriver]:
    """The driver of ``-f``/``-O NAME``; an unknown one in qemu-img's words."""
    from vmforge.plugins import PluginNotFound

    try:
        return driver_class(name)
    except PluginNotFound:
        raise img_words.unknown_format(name, filename) from None


#: what qemu's file protocol adds to every format's create options
_PROTOCOL_OPTIONS = ("size", "nocow", "preallocation", "extent_size_hint")


def _check_option_names(cls: type[BlockDriver], filename: str, opts: dict[str, Any]) -> None:
    known = {k.replace("-", "_") for k in (*cls.create_options, *_PROTOCOL_OPTIONS,
                                           *img_objects.KEY_SECRET)}
    for name in opts:
        if name.replace("-", "_") not in known:
            raise QemuImgError(f"{filename}: Invalid parameter '{name}'")
        opt = cls.create_options.get(name)
        sized = opt.type is int if opt is not None else name == "extent_size_hint"
        if sized and isinstance(opts[name], str):
            try:
                parse_size(opts[name])
            except ValueError:
                raise img_words.bad_size_option(name, filename) from None
        elif opt is not None and opt.type is bool:      # (QemuOpts: before "Formatting")
            try:
                opt.parse(opts[name])
            except OptionValueError as exc:
                raise QemuImgError(f"{filename}: {exc.words}") from None


def _open_backing(filename: str, backing: str, fmt: str | None) -> tuple[str, int]:
    """(format, size) of the backing file, or qemu-img's error naming it."""
    try:
        with open_image(resolve_backing(filename, backing), fmt, force_share=True) as bb:
            return bb.format, bb.size
    except QemuImgError as exc:
        reason = img_words.open_failed(backing, exc.__cause__ or exc, fmt).lines[0]
        reason = reason.removeprefix(f"Could not open '{backing}': ")
        raise QemuImgError(f"{filename}: {reason}", "Could not open backing image.",
                           prefixed=(True, False)) from exc


def cmd_create(args: argparse.Namespace) -> int:
    cls = format_class(args.format, args.file)
    opts: dict[str, Any] = parse_options(args.options)
    if "help" in opts:
        print(create_options_help(cls))
        return 0
    if args.file is None:
        raise img_words.usage("Expecting image file name", prog())
    size = size_arg(args.size) if args.size is not None else None
    if "size" in opts:
        size = size_arg(opts.pop("size"))
    _check_option_names(cls, args.file, opts)
    backing = args.backing or opts.get("backing_file")
    backing_fmt = args.backing_format or opts.get("backing_fmt")
    if backing:
        if not cls.supports_backing:
            raise QemuImgError(f"{args.file}: Backing file not supported for file format "
                               f"'{cls.format_name}'")
        detected = backing_fmt
        if not args.unsafe:
            detected, backing_size = _open_backing(args.file, backing, backing_fmt)
            size = backing_size if size is None else size
        if not backing_fmt:  # as qemu-img 7.2: the format is recorded, never guessed later
            raise QemuImgError(f"{args.file}: Backing file specified without backing format",
                               *([f"Detected format of {detected}."] if detected else []),
                               prefixed=(True, False), final_newline=not detected)
        opts["backing_file"], opts["backing_fmt"] = backing, backing_fmt
    if size is None:
        raise QemuImgError(f"{args.file}: Image creation needs a size parameter")
    if not args.quiet:       # key-secret=ID is shown, never the secret
        from vmforge.cli.img_formatting import formatting_line  # create's only

        print(formatting_line(args.file, cls.format_name, size, opts))
    target = img_objects.target_filename(args.file)
    with file_protocol_options(target, opts, warn) as format_opts:
        try:
            create_image(cls.format_name, target, size,
                         **img_objects.context().resolve_secret(format_opts))
        except OptionValueError as exc:           # a value the driver refuses
            raise QemuImgError(f"{args.file}: {exc.words}") from None
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from vmforge.block import ops  # here: create does without it (start-up time)

    out_cls = format_class(args.output_format)
    opts = img_objects.context().resolve_secret(parse_options(args.options))
    if args.size is not None and args.file is not None:
        raise QemuImgError("--size N cannot be used together with a filename.")
    if args.size is None and args.file is None:
        raise QemuImgError("Either --size N or one filename must be specified.")
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


