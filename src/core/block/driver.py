"""The disk-format driver API, generation 1 (``BLOCK_API_VERSION``).

A format plugin subclasses :class:`BlockDriver` and registers the class under
the entry-point group ``vmforge.block``::

    [project.entry-points."vmforge.block"]
    myfmt = "vmforge_myfmt:MyFormat"

What a driver implements (QEMU's ``struct BlockDriver``, one generation):

=====================  ===========================================================
``probe``              score 0..100 for the first bytes of a file (class method)
``create``             make a new image with typed ``create_options``
``open``               open read-only or read-write (class method)
``preadv/pwritev``     vectored I/O at any offset and length into caller memory
``block_status``       data / zero / unallocated-here extents, with host offsets
``write_zeroes``       optional; the base class falls back to writing zeros
``discard``            optional; a hint, may do nothing
``flush``              make written data durable
``truncate``           optional; change the virtual size
``check``              consistency check, optionally repairing
``info``               format-specific facts for ``vmforge img info``
``change_backing_file``  optional; rewrite the recorded backing file (``img rebase``)
``measure``            optional; the file size a new image needs (``img measure``)
``amend``              optional; change options of an existing image (``img amend``),
                       those listed in ``amend_options``; the default refuses
``snapshots``          optional; internal snapshots (``img snapshot -l``), and
                       ``create_snapshot`` / ``revert_snapshot`` / ``delete_snapshot``
                       (``-c`` / ``-a`` / ``-d``)
=====================  ===========================================================

Backing files.  A format with ``supports_backing`` takes the create options
``backing_file`` and ``backing_fmt`` (qemu-img's names) and reports unallocated
ranges with ``block_status`` (no ``ALLOCATED`` flag); the driver never opens
the backing file itself.  :class:`~vmforge.block.backend.BlockBackend` opens
the chain, reads unallocated ranges from the next layer, and does the
copy-on-write: a write that covers part of an unallocated unit of
``granularity`` bytes reaches the driver widened to whole units, filled from
the backing chain.  A driver whose unit depends on the image (a qcow2 cluster)
sets ``self.granularity`` when it opens.

Offsets and lengths are in bytes: the driver handles any alignment (a
format with clusters does read-modify-write itself).  Reads and writes past
the virtual size raise :class:`BlockRangeError`.
"""

from __future__ import annotations

import os

from vmforge.errors import VmforgeError
from vmforge.flags import Flags
from vmforge.record import FrozenRecord, Record

TYPE_CHECKING = False
if TYPE_CHECKING:       # (typing costs ~4 ms of start-up: names for the type checker only)
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any, ClassVar, Self

__all__ = [
    "BLOCK_API_VERSION",
    "BlockDriver",
    "BlockError",
    "BlockRangeError",
    "BlockStatus",
    "CheckResult",
    "CorruptImageError",
    "CreateOption",
    "Extent",
    "ImageInfo",
    "OptionValueError",
    "ReadOnlyError",
    "SnapshotInfo",
    "UnsupportedOperation",
    "parse_size",
]

#: The generation of this API.  A driver declares the one it was written for in
#: ``api_version``; the registry refuses drivers of another generation.
BLOCK_API_VERSION = 1


class BlockError(VmforgeError):
    """An error of the block layer; names the file where it knows it."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        self.filename = filename
        super().__init__(f"{filename}: {message}" if filename else message)


class CorruptImageError(BlockError):
    """The image's metadata is inconsistent; names the table and the offset."""

    def __init__(self, message: str, filename: str | None = None,
                 offset: int | None = None, table: str | None = None) -> None:
        self.offset = offset
        self.table = table
        where = ""
        if table:
            where += f" in {table}"
        if offset is not None:
            where += f" at offset {offset:#x}"
        super().__init__(f"corrupt image{where}: {message}", filename)


class BlockRangeError(BlockError, ValueError):
    """An offset or length outside the image's virtual size."""


class ReadOnlyError(BlockError, PermissionError):
    """A write to an image opened read-only."""

    def __str__(self) -> str:     # OSError's would show "[Errno None] None: <file>"
        return str(self.args[0]) if self.args else "read-only"


class UnsupportedOperation(BlockError, NotImplementedError):
    """The format cannot do this (e.g. truncate a fixed-size format)."""


class KeyRequired(BlockError):
    """The image's data needs a key (an encrypted format opened without its
    passphrase).  Its metadata can still be read: a driver that raises this from
    ``open`` also accepts the open option ``no_io=True`` (QEMU's BDRV_O_NO_IO,
    what ``qemu-img info`` opens with), and then refuses every data access."""


class BlockStatus(Flags):
    """What a range of an image holds (QEMU's BDRV_BLOCK_* flags); an
    ``enum.IntFlag`` look-alike (:class:`vmforge.flags.Flags`: enum costs start-up)."""

    DATA: ClassVar[BlockStatus]          #: reads come from this layer's data
    ZERO: ClassVar[BlockStatus]          #: reads as zeros
    ALLOCATED: ClassVar[BlockStatus]     #: this layer decides the contents (else: the backing file)
    COMPRESSED: ClassVar[BlockStatus]    #: stored compressed (no host offset)


BlockStatus.define(DATA=1, ZERO=2, ALLOCATED=4, COMPRESSED=8)


class Extent(FrozenRecord):
    """A run of the image with one status (a frozen record: see :mod:`vmforge.record`).

    ``host_offset`` is where the data sits in the image file (None when it is
    not stored plainly: zeros, unallocated, compressed).  ``depth`` is the
    layer of a backing chain that decided it (0: the top).
    """

    __slots__ = __match_args__ = ("offset", "length", "status", "host_offset", "depth",
                                  "filename")
    offset: int
    length: int
    status: BlockStatus
    host_offset: int | None
    depth: int
    filename: str | None

    def __init__(self, offset: int, length: int, status: BlockStatus,
                 host_offset: int | None = None, depth: int = 0,
                 filename: str | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "offset", offset)
        setattr_(self, "length", length)
        setattr_(self, "status", status)
        setattr_(self, "host_offset", host_offset)
        setattr_(self, "depth", depth)
        setattr_(self, "filename", filename)

    @property
    def end(self) -> int:
        return self.offset + self.length

    # (plain int arithmetic: IntFlag's operators cost microseconds, and a fragmented
    # image has millions of extents)
    @property
    def is_data(self) -> bool:
        return bool(int(self.status) & 1)

    @property
    def is_zero(self) -> bool:
        return bool(int(self.status) & 2)

    @property
    def is_allocated(self) -> bool:
        return bool(int(self.status) & 4)


class OptionValueError(ValueError):
    """A value the create or amend option ``option`` refuses: ``words`` are qemu-img's
    (``str`` adds the option's name where they lack it); ``typed``: refused for its
    type (on/off) before the driver sees it, as QemuOpts does, so ``create`` prints no
    ``Formatting`` line for it."""

    def __init__(self, words: str, option: str, typed: bool = False) -> None:
        super().__init__(words if f"'{option}'" in words else f"option {option}: {words}")
        self.words = words
        self.option = option
        self.typed = typed


#: the words QemuOpts accepts for a boolean option (case as given)
_ON = frozenset(("on", "yes", "y", "true"))
_OFF = frozenset(("off", "no", "n", "false"))


class CreateOption(FrozenRecord):
    """A typed, documented option of ``create`` (``-o name=value``; a frozen record).

    ``refused``: how qemu-img words a value outside ``choices`` for this driver's
    option, with ``{name}`` and ``{value}`` (default: ``Parameter '{name}' does not
    accept value '{value}'``, what QEMU's generated enum parsers say)."""

    __slots__ = __match_args__ = ("name", "type", "default", "help", "choices", "refused")
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    refused: str

    def __init__(self, name: str, type: Callable[[str], Any], default: Any, help: str,
                 choices: tuple[Any, ...] | None = None,
                 refused: str = "Parameter '{name}' does not accept value '{value}'") -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "type", type)
        setattr_(self, "default", default)
        setattr_(self, "help", help)
        setattr_(self, "choices", choices)
        setattr_(self, "refused", refused)

    def parse(self, text: Any) -> Any:
        """The value of ``text``; :class:`OptionValueError` in qemu-img's words if refused."""
        if not isinstance(text, str):
            value = text
        elif self.type is bool:
            if text not in _ON and text not in _OFF:
                raise OptionValueError(f"Parameter '{self.name}' expects 'on' or 'off'",
                                       self.name, typed=True)
            value = text in _ON
        elif self.type is int:
            value = parse_size(text)
        else:
            value = self.type(text)
        if self.choices is not None and value not in self.choices:
            raise OptionValueError(self.refused.format(name=self.name, value=value), self.name)
        return value


class CheckResult(Record):
    """What ``check`` found (the fields of ``qemu-img check --output json``; a record)."""

    __slots__ = __match_args__ = (
        "filename", "format", "corruptions", "leaks", "check_errors", "corruptions_fixed",
        "leaks_fixed", "image_end_offset", "messages", "total_clusters",
        "allocated_clusters", "fragmented_clusters", "compressed_clusters")
    filename: str
    format: str
    corruptions: int
    leaks: int
    check_errors: int
    corruptions_fixed: int
    leaks_fixed: int
    image_end_offset: int | None
    messages: list[str]
    #: cluster statistics (formats with clusters; None: not reported)
    total_clusters: int | None
    allocated_clusters: int | None
    fragmented_clusters: int | None
    compressed_clusters: int | None

    def __init__(self, filename: str, format: str, corruptions: int = 0, leaks: int = 0,
                 check_errors: int = 0, corruptions_fixed: int = 0, leaks_fixed: int = 0,
                 image_end_offset: int | None = None, messages: list[str] | None = None,
                 total_clusters: int | None = None, allocated_clusters: int | None = None,
                 fragmented_clusters: int | None = None,
                 compressed_clusters: int | None = None) -> None:
        self.filename = filename
        self.format = format
        self.corruptions = corruptions
        self.leaks = leaks
        self.check_errors = check_errors
        self.corruptions_fixed = corruptions_fixed
        self.leaks_fixed = leaks_fixed
        self.image_end_offset = image_end_offset
        self.messages = [] if messages is None else messages
        self.total_clusters = total_clusters
        self.allocated_clusters = allocated_clusters
        self.fragmented_clusters = fragmented_clusters
        self.compressed_clusters = compressed_clusters

    @property
    def clean(self) -> bool:
        return self.corruptions == 0 and self.leaks == 0 and self.check_errors == 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "filename": self.filename, "format": self.format,
            "check-errors": self.check_errors,
        }
        if self.corruptions:
            out["corruptions"] = self.corruptions
        if self.leaks:
            out["leaks"] = self.leaks
        if self.corruptions_fixed:
            out["corruptions-fixed"] = self.corruptions_fixed
        if self.leaks_fixed:
            out["leaks-fixed"] = self.leaks_fixed
        if self.image_end_offset is not None:
            out["image-end-offset"] = self.image_end_offset
        for key in ("total_clusters", "allocated_clusters", "fragmented_clusters",
                    "compressed_clusters"):
            value = getattr(self, key)
            if value:           # qemu-img leaves out the statistics that are zero
                out[key.replace("_", "-")] = value
        return out


class ImageInfo(Record):
    """What ``info`` reports (the fields of ``qemu-img info``; a record)."""

    __slots__ = __match_args__ = (
        "filename", "format", "virtual_size", "actual_size", "cluster_size",
        "backing_filename", "backing_format", "dirty", "format_specific", "encrypted")
    filename: str
    format: str
    virtual_size: int
    actual_size: int
    cluster_size: int | None
    backing_filename: str | None
    backing_format: str | None
    dirty: bool
    format_specific: dict[str, Any]
    #: the data is encrypted (luks; qemu-img's ``encrypted: yes``)
    encrypted: bool

    def __init__(self, filename: str, format: str, virtual_size: int, actual_size: int,
                 cluster_size: int | None = None, backing_filename: str | None = None,
                 backing_format: str | None = None, dirty: bool = False,
                 format_specific: dict[str, Any] | None = None,
                 encrypted: bool = False) -> None:
        self.filename = filename
        self.format = format
        self.virtual_size = virtual_size
        self.actual_size = actual_size
        self.cluster_size = cluster_size
        self.backing_filename = backing_filename
        self.backing_format = backing_format
        self.dirty = dirty
        self.format_specific = {} if format_specific is None else format_specific
        self.encrypted = encrypted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "filename": self.filename, "format": self.format,
            "virtual-size": self.virtual_size, "actual-size": self.actual_size,
            "dirty-flag": self.dirty,
        }
        if self.cluster_size is not None:
            out["cluster-size"] = self.cluster_size
        if self.backing_filename is not None:
            out["backing-filename"] = self.backing_filename
        if self.backing_format is not None:
            out["backing-filename-format"] = self.backing_format
        if self.format_specific:
            out["format-specific"] = {"type": self.format, "data": self.format_specific}
        if self.encrypted:
            out["encrypted"] = True
        return out


class SnapshotInfo(FrozenRecord):
    """An internal snapshot (a row of ``qemu-img snapshot -l``; a frozen record)."""

    __slots__ = __match_args__ = ("id", "name", "vm_state_size", "date_sec", "date_nsec",
                                  "vm_clock_nsec", "icount")
    id: str
    name: str
    vm_state_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    icount: int | None

    def __init__(self, id: str, name: str, vm_state_size: int = 0, date_sec: int = 0,
                 date_nsec: int = 0, vm_clock_nsec: int = 0,
                 icount: int | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "id", id)
        setattr_(self, "name", name)
        setattr_(self, "vm_state_size", vm_state_size)
        setattr_(self, "date_sec", date_sec)
        setattr_(self, "date_nsec", date_nsec)
        setattr_(self, "vm_clock_nsec", vm_clock_nsec)
        setattr_(self, "icount", icount)


_SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
             "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str | int) -> int:
    """``"64M"`` -> 67108864; qemu-img's suffixes (K, M, G, T, P, E; powers of 1024)."""
    if isinstance(text, int):
        return text
    s = text.strip().lower().removesuffix("ib").removesuffix("i")
    unit = s[-1:] if s[-1:].isalpha() else ""
    if unit not in _SUFFIXES:
        raise ValueError(f"size {text!r}: unknown suffix {unit!r}")
    number = s[: len(s) - len(unit)]
    try:
        value = float(number) if "." in number else int(number, 0)
    except ValueError:
        raise ValueError(f"size {text!r} is not a number") from None
    scaled = value * _SUFFIXES[unit]
    if scaled != scaled or scaled in (float("inf"), float("-inf")):   # 1.0e400, nan
        raise ValueError(f"size {text!r} is out of range")
    size = int(scaled)
    if size < 0 or size >= 1 << 63:
        raise ValueError(f"size {text!r} is out of range")
    return size


class BlockDriver:
    """What a disk format implements.  One open image is one instance."""

    #: the format's name (``-f NAME``, the entry-point name)
    format_name: ClassVar[str] = ""
    #: the generation of the driver API it implements
    api_version: ClassVar[int] = BLOCK_API_VERSION
    #: typed options of ``create`` (``-o``), by name
    create_options: ClassVar[dict[str, CreateOption]] = {}
    #: whether images of this format can have a backing file
    supports_backing: ClassVar[bool] = False
    #: the granularity ``block_status`` reports at (bytes)
    granularity: ClassVar[int] = 512
    #: whether ``write_compressed`` is implemented
    supports_compressed_writes: ClassVar[bool] = False
    #: options ``amend`` can change (``img amend -o help`` lists them), by name
    amend_options: ClassVar[dict[str, CreateOption]] = {}
    #: False: ``img map`` shows what qemu-img shows for a format whose QEMU driver
    #: has no block status (vhdx): the whole image as data, no host offsets (the
    #: driver's own ``block_status`` still serves convert, compare and the rest)
    block_status_in_map: ClassVar[bool] = True

    def __init__(self, filename: str, readonly: bool) -> None:
        self.filename = filename
        self.readonly = readonly
        self.closed = False
        #: False: ``flush`` writes the driver's cached metadata but skips
        #: fsync/fdatasync (QEMU's ``cache=unsafe``, the default of ``img convert``);
        #: set by :class:`~vmforge.block.backend.BlockBackend` after ``open``
        self.sync = True

    # -- class-level: probe, create, open -------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        """Score 0 (not mine) .. 100 (certainly mine) for a file's first bytes."""
        return 0

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        """Create an image of ``size`` virtual bytes at ``path``."""
        raise UnsupportedOperation(f"format {cls.format_name} cannot create images", path)

    @classmethod
    def parse_create_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Check and convert ``options`` against ``create_options``, adding defaults."""
        out = {name: opt.default for name, opt in cls.create_options.items()}
        for key, value in options.items():
            key = key.replace("-", "_")
            opt = cls.create_options.get(key)
            if opt is None:
                known = ", ".join(sorted(cls.create_options)) or "none"
                raise ValueError(f"format {cls.format_name} has no create option {key!r} "
                                 f"(it has: {known})")
            out[key] = opt.parse(value)
        return out

    @classmethod
    def measure(cls, size: int, allocated: Iterable[tuple[int, int]] | None,
                **options: Any) -> dict[str, int]:
        """How large a new image of this format would be (``img measure``).

        ``allocated`` gives the ``(offset, length)`` ranges holding data, in
        order, possibly as an iterator (``img measure`` streams them: iterate
        once, keep no list); None: a new, empty image of ``size`` bytes.
        ``options`` are create options.
        Returns at least ``{"required": ..., "fully-allocated": ...}`` in bytes
        (qemu-img's keys; a format may add its own, like qcow2's ``bitmaps``).
        """
        raise UnsupportedOperation(f"format {cls.format_name} cannot measure images")

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        """Open the image at ``path``.

        ``options`` are format-specific; a driver ignores those it does not know
        of the generic ones: ``for_check=True`` (``img check -r``) asks for a
        read-write open meant for repairs, which must succeed on an image the
        format would otherwise refuse to write (QEMU's ``BDRV_O_CHECK``).
        """
        raise NotImplementedError

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Virtual size in bytes."""
        raise NotImplementedError

    @property
    def backing_filename(self) -> str | None:
        """The backing file as recorded in the image (None: no backing file)."""
        return None

    @property
    def backing_format(self) -> str | None:
        return None

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Fill ``buffers`` in order with the image's bytes from ``offset``.

        Unallocated ranges of a format with backing files read as zeros here;
        :class:`~vmforge.block.backend.BlockBackend` fills them from the chain.
        """
        raise NotImplementedError

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, buffer)`` of ``runs``: the same as :meth:`preadv` on
        each, which is the default.  ``convert`` reads the data it copies this way, a
        batch per 2 MiB; a driver may read a batch with fewer calls (qcow2 reads runs
        that lie next to each other in its file as one)."""
        for offset, buf in runs:
            self.preadv(offset, [buf])

    def preadv_nowait(self, offset: int, buffers: Sequence[memoryview]) -> bool:
        """Like :meth:`preadv`, but only if it can be done at once without waiting for
        a disk (the data is in the host's page cache): True when the buffers were
        filled, False when the caller must use :meth:`preadv` (on an I/O thread).
        A device answers cached reads on its own thread this way, sparing two
        thread hand-offs.  The default never can; ``vmforge-raw`` uses Linux's
        ``preadv2(RWF_NOWAIT)``."""
        return False

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Write ``buffers`` in order at ``offset``."""
        raise ReadOnlyError(f"format {self.format_name} is read-only", self.filename)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Write each ``(offset, bytes)`` of ``runs``, in order: the same result as
        :meth:`pwritev` on each in turn, which is the default.  ``convert`` hands its
        writes over this way, a batch per buffer; a driver may do a batch with fewer
        calls (qcow2 writes runs that land next to each other in its file as one)."""
        for offset, data in runs:
            self.pwritev(offset, [data])

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        """Extents covering ``[offset, offset+length)`` in order, adjacent ones merged
        where the driver can.  The default: everything is allocated data."""
        self._check_range(offset, length)
        yield Extent(offset, length, BlockStatus.DATA | BlockStatus.ALLOCATED, None, 0,
                     self.filename)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Make ``[offset, offset+length)`` read as zeros."""
        self._check_writable()
        self._check_range(offset, length)
        chunk = bytes(min(length, 1 << 20))
        done = 0
        while done < length:
            n = min(len(chunk), length - done)
            self.pwritev(offset + done, [memoryview(chunk)[:n]])
            done += n

    def write_compressed(self, offset: int, data: bytes | memoryview) -> None:
        """Write whole clusters compressed (``convert -c``).

        ``offset`` is cluster-aligned and ``data`` one cluster (the last one may
        be short at the end of the image).  Must be safe to call from several
        threads at once: compress without holding locks (zlib releases the GIL),
        then allocate and write under the driver's lock, so that ``convert -c``
        compresses on every core.
        """
        raise UnsupportedOperation(f"format {self.format_name} has no compressed clusters",
                                   self.filename)

    def discard(self, offset: int, length: int) -> None:
        """Say the range is unused (a hint; contents become unspecified)."""

    def flush(self) -> None:
        """Make completed writes durable (without the fsync when ``self.sync`` is False)."""

    def truncate(self, size: int) -> None:
        """Change the virtual size."""
        raise UnsupportedOperation(f"format {self.format_name} cannot be resized",
                                   self.filename)

    def check(self, repair: str | None = None) -> CheckResult:
        """Check consistency; ``repair`` is None, ``"leaks"`` or ``"all"``."""
        return CheckResult(self.filename, self.format_name)

    def amend(self, options: dict[str, Any], force: bool = False) -> None:
        """Change options of the open (writable) image in place (``img amend -o``).

        ``options`` maps names of ``amend_options`` to values (strings from the
        command line, or typed); check them all before changing anything.
        ``force`` allows what is refused otherwise (qemu-img's ``--force``).
        The default: the format cannot, in qemu-img's words.
        """
        raise UnsupportedOperation(f"Format driver '{self.format_name}' does not support "
                                   "option amendment")

    def change_backing_file(self, filename: str | None, fmt: str | None) -> None:
        """Record ``filename`` (as given: may be relative) and ``fmt`` as the backing
        file, or none.  Only the header changes; ``img rebase`` copies data first."""
        raise UnsupportedOperation(f"format {self.format_name} has no backing files",
                                   self.filename)

    def snapshots(self) -> list[SnapshotInfo]:
        """Internal snapshots, oldest first (none by default)."""
        return []

    def create_snapshot(self, name: str) -> Any:
        """Take an internal snapshot called ``name`` (``img snapshot -c``)."""
        raise UnsupportedOperation(f"format {self.format_name} has no internal snapshots",
                                   self.filename)

    def revert_snapshot(self, key: str) -> None:
        """Make the disk what it was in the snapshot with that id or name (``-a``)."""
        raise UnsupportedOperation(f"format {self.format_name} has no internal snapshots",
                                   self.filename)

    def delete_snapshot(self, key: str) -> None:
        """Delete the snapshot with that id or name (``img snapshot -d``)."""
        raise UnsupportedOperation(f"format {self.format_name} has no internal snapshots",
                                   self.filename)

    def info(self) -> ImageInfo:
        """Facts for ``vmforge img info``."""
        return ImageInfo(self.filename, self.format_name, self.size, _actual_size(self.filename))

    def close(self) -> None:
        """Release the image (flushes first when writable)."""
        if not self.closed:
            if not self.readonly:
                self.flush()
            self.closed = True

    # -- conveniences built on the vectored calls ---------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``."""
        self._check_range(offset, length)
        buf = bytearray(length)
        if length:
            self.preadv(offset, [memoryview(buf)])
        return bytes(buf)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``."""
        self._check_writable()
        mv = memoryview(data).cast("B")
        self._check_range(offset, mv.nbytes)
        if mv.nbytes:
            self.pwritev(offset, [mv])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<{type(self).__name__} {self.filename!r} {mode}>"

    # -- helpers for drivers ---------------------------------------------------------------

    def _checked_runs(self, runs: Sequence[tuple[int, Any]]) -> list[tuple[int, memoryview]]:
        """``runs`` (what :meth:`pwritev_runs` gets) as ``(offset, byte view)`` pairs,
        each range checked as :meth:`_check_range` checks it: one pass over a batch,
        for a driver's own batch loop."""
        size, out = self.size, []
        for offset, buf in runs:
            if type(buf) is not memoryview or buf.format != "B" or buf.ndim != 1:
                buf = memoryview(buf).cast("B")
            if offset < 0 or offset + buf.nbytes > size:
                self._check_range(offset, buf.nbytes)      # (raises)
            out.append((offset, buf))
        return out

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BlockRangeError(f"range of {length} bytes at offset {offset} is outside "
                                  f"the virtual size {self.size}", self.filename)

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyError("image is open read-only", self.filename)
        if self.closed:
            raise BlockError("image is closed", self.filename)


def _actual_size(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
