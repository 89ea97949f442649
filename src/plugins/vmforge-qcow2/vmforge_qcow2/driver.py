"""The ``qcow2`` block driver: what the ``vmforge.block`` entry point names."""

from __future__ import annotations

import os

from vmforge.block import (
    BlockError,
    CheckResult,
    CreateOption,
    ImageInfo,
    UnsupportedOperation,
)
from vmforge.block.driver import SnapshotInfo

from .header import (
    EXT_BACKING_FORMAT,
    EXT_BITMAPS,
    INCOMPAT_DIRTY,
    Extension,
    describe_bits,
)
from .snapshot import Snapshot
from .write import Qcow2Writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, ClassVar, Self

# Start-up time: what only some commands use (create, check, amend, snapshot writes,
# bitmaps) is imported by the method that uses it, not with the driver that
# ``vmforge img info`` imports.


def _actual_size(path: str) -> int:
    """Bytes the file takes on disk (``disk size`` of ``qemu-img info``)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


class _AmendOptions:
    """``Qcow2.amend_options``: :data:`.amend.AMEND_OPTIONS`, with :mod:`.amend` imported
    when first asked for (not by every open: ~0.3 ms of start-up)."""

    def __get__(self, obj: object, cls: type | None = None) -> dict[str, CreateOption]:
        from .amend import AMEND_OPTIONS

        return AMEND_OPTIONS


class Qcow2(Qcow2Writer):
    """QEMU's qcow2 format, versions 2 (compat=0.10) and 3 (compat=1.1).

    Open options: ``snapshot`` (id or name: open that internal snapshot
    read-only), ``l2_cache_size`` (bytes of L2 tables to cache, default 8 MiB),
    ``for_check`` (allow a read-write open of an image marked corrupt, to
    repair it), ``data_file`` (the external data file, instead of the name the
    image records), ``no_flush`` (never fdatasync: QEMU's ``cache.no-flush``, what
    ``qemu-img convert`` uses by default; safe against process crashes, not
    against power loss).
    """

    format_name = "qcow2"
    supports_backing = True
    supports_compressed_writes = True
    granularity = 65536
    create_options: ClassVar[dict[str, CreateOption]] = {
        "cluster_size": CreateOption("cluster_size", int, 65536,
                                     "qcow2 cluster size (512 .. 2M, a power of two)"),
        "compat": CreateOption("compat", str, "1.1",
                               "qcow2 version: 0.10 (v2) or 1.1 (v3)",
                               choices=("0.10", "1.1", "v2", "v3"),
                               refused="Parameter 'version' does not accept value '{value}'"),
        "lazy_refcounts": CreateOption("lazy_refcounts", bool, False,
                                       "postpone refcount updates (compat=1.1 only)"),
        "preallocation": CreateOption("preallocation", str, "off",
                                      "off, metadata, falloc or full",
                                      choices=("off", "metadata", "falloc", "full")),
        "backing_file": CreateOption("backing_file", str, None,
                                     "file name of a base image"),
        "backing_fmt": CreateOption("backing_fmt", str, None,
                                    "format of the base image"),
        "compression_type": CreateOption("compression_type", str, "zlib",
                                         "zlib, or zstd (needs the zstandard package)",
                                         choices=("zlib", "zstd"),
                                         refused="Parameter 'compression-type' does not "
                                                 "accept value '{value}'"),
        "data_file": CreateOption("data_file", str, None,
                                  "keep guest data in this raw file (compat=1.1)"),
        "data_file_raw": CreateOption("data_file_raw", bool, False,
                                      "the data file stays a valid raw image"),
        "extended_l2": CreateOption("extended_l2", bool, False,
                                    "32 subclusters per cluster (compat=1.1, clusters of "
                                    "16 KiB or more)"),
        "refcount_bits": CreateOption("refcount_bits", int, 16,
                                      "width of a reference count entry (1..64)",
                                      choices=(1, 2, 4, 8, 16, 32, 64),
                                      refused="Refcount width must be a power of two and "
                                              "may not exceed 64 bits"),
    }

    # -- create / open -------------------------------------------------------------

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        """Create an image (``qemu-img create -f qcow2``'s options).

        The backing file is recorded as given; ``size`` is not taken from it
        (the caller, like ``vmforge img create``, resolves it).
        """
        from .create import create_data_file, plan_header, preallocate, write_new_image

        opts = cls.parse_create_options(options)
        size = -(-size // 512) * 512    # QEMU counts qcow2 sizes in 512-byte sectors
        if opts.get("backing_fmt") and not opts.get("backing_file"):
            raise BlockError("backing_fmt given without backing_file", path)
        h = plan_header(size, opts, path)
        data_file = opts.get("data_file")
        made_data_file = bool(data_file) and not os.path.lexists(data_file)
        write_new_image(path, h, "off" if data_file else opts["preallocation"])
        try:
            if data_file:
                create_data_file(path, data_file, h.size)
            if data_file and opts["preallocation"] != "off":
                with cls.open(path, readonly=False) as img:
                    preallocate(img, opts["preallocation"])
        except BaseException:
            # nothing half made stays behind: not the image, not a data file we made
            for made in [path] + ([data_file] if made_data_file else []):
                try:
                    os.unlink(made)
                except OSError:
                    pass
            raise

    @classmethod
    def measure(cls, size: int, allocated: Iterable[tuple[int, int]] | None,
                **options: Any) -> dict[str, int]:
        """File size a new image needs (QEMU's ``qcow2_measure``)."""
        from .create import plan_header, prealloc_size

        opts = cls.parse_create_options(options)
        h = plan_header(size, opts, "<measure>")
        cs = h.cluster_size
        full = prealloc_size(size, h.cluster_bits, h.refcount_order, h.extended_l2)
        if opts["preallocation"] != "off":
            return {"required": full, "fully-allocated": full}
        used = 0
        last_end = 0
        # in order (an iterator, streamed); a list may come in any order
        ranges = sorted(allocated) if isinstance(allocated, list | tuple) else allocated
        for off, n in ranges or ():
            if n <= 0:
                continue
            a = max(off // cs * cs, last_end)
            b = -(-(off + n) // cs) * cs
            if b > a:
                used += b - a
                last_end = b
        return {"required": full - -(-size // cs) * cs + used, "fully-allocated": full}

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        known = {"snapshot", "l2_cache_size", "for_check", "no_flush", "data_file"}
        bad = set(options) - known
        if bad:
            raise ValueError(f"qcow2 has no open option(s) {', '.join(sorted(bad))} "
                             f"(it has: {', '.join(sorted(known))})")
        return cls(path, readonly, **options)

    # -- snapshots ------------------------------------------------------------------------

    def list_snapshots(self) -> list[Snapshot]:
        """Internal snapshots with every stored field (L1 table, disk size too)."""
        return list(self._snaps)

    def snapshots(self) -> list[SnapshotInfo]:
        """Internal snapshots as ``qemu-img snapshot -l`` lists them, oldest first."""
        return [SnapshotInfo(s.id, s.name, s.vm_state_size, s.date_sec, s.date_nsec,
                             s.vm_clock_nsec, s.icount) for s in self._snaps]

    def create_snapshot(self, name: str, vm_state_size: int = 0, vm_clock_nsec: int = 0,
                        icount: int | None = None) -> Snapshot:
        """Take an internal snapshot of the disk (``qemu-img snapshot -c``)."""
        self._check_writable()
        if self.has_data_file:
            raise UnsupportedOperation("images with an external data file cannot have "
                                       "internal snapshots", self.filename)
        from .snapshot_write import create_snapshot

        return create_snapshot(self, name, vm_state_size, vm_clock_nsec, icount)

    def save_vm_snapshot(self, name: str, chunks: Sequence[bytes | memoryview],
                         vm_clock_nsec: int) -> SnapshotInfo:
        """``savevm``: a snapshot of the disk holding ``chunks`` as its VM state."""
        from .vmstate import save_vm_snapshot

        self._check_writable()
        snap = save_vm_snapshot(self, name, chunks, vm_clock_nsec)
        return next(s for s in self.snapshots() if s.id == snap.id)

    def read_vm_state(self, key: str) -> Any:
        """The VM state of snapshot ``key`` (``loadvm`` then reverts the disk)."""
        from .vmstate import read_vm_state

        return read_vm_state(self, key)

    def delete_snapshot(self, key: str) -> None:
        """Delete an internal snapshot by id or name (``qemu-img snapshot -d``)."""
        from .snapshot_write import delete_snapshot

        self._check_writable()
        delete_snapshot(self, key)

    def revert_snapshot(self, key: str) -> None:
        """Make the disk what it was when the snapshot was taken (``qemu-img snapshot -a``)."""
        from .snapshot_write import revert_snapshot

        self._check_writable()
        revert_snapshot(self, key)

    def change_backing_file(self, filename: str | None, fmt: str | None) -> None:
        """Rewrite the backing file name and format in the header (one write).

        Unknown header extensions are kept as they are.
        """
        self._check_writable()
        with self.lock:
            # what was written under the old backing file (rebase's copies) is on
            # disk before the header names the new one
            self._barrier()
            self.f.sync()
            h = self.h
            exts = [e for e in h.extensions if e.type != EXT_BACKING_FORMAT]
            if filename and fmt:
                exts.insert(0, Extension(EXT_BACKING_FORMAT, fmt.encode()))
            old = (h.backing_file, h.extensions, h.backing_file_offset, h.backing_file_size)
            h.backing_file, h.extensions = filename or None, exts
            try:
                cluster0 = h.pack()
            except BlockError:
                h.backing_file, h.extensions, h.backing_file_offset, h.backing_file_size = old
                raise
            self.f.pwrite(0, cluster0)
            self.f.sync()

    # -- housekeeping -----------------------------------------------------------------

    def flush(self) -> None:
        if self.readonly or self.closed:
            return
        with self.lock:
            self._barrier()
            if self.data is not self.f:
                self.data.sync()
            self.f.sync()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.readonly:
                with self.lock:
                    self._barrier()
                    self.refs.write_back()
                    self.f.sync()
                    if self._marked_dirty:
                        self._set_incompat(self.h.incompatible_features & ~INCOMPAT_DIRTY)
                        self.f.sync()
                        self._marked_dirty = False
        finally:
            self.closed = True
            if self.data is not self.f:
                self.data.close()
            self.f.close()

    def __del__(self) -> None:
        f = getattr(self, "f", None)
        if f is not None and f.fd >= 0 and not getattr(self, "closed", True):
            try:
                self.close()
            except Exception:
                pass

    def bitmaps(self) -> list[dict[str, Any]]:
        """Persistent dirty bitmaps as ``qemu-img info`` lists them (empty when the
        bitmaps extension is absent or no longer valid)."""
        if self.h.ext(EXT_BITMAPS) is None:
            return []          # as read_directory answers, without importing it
        from . import bitmaps

        try:
            return [b.to_info() for b in bitmaps.read_directory(self)]
        except BlockError:
            return []

    def add_bitmap(self, name: str, granularity: int | None = None,
                   enabled: bool = True) -> None:
        """A new, empty persistent dirty bitmap (``img bitmap --add``)."""
        from . import bitmaps

        bitmaps.add_bitmap(self, name, granularity, enabled)

    def remove_bitmap(self, name: str) -> None:
        from . import bitmaps

        bitmaps.remove_bitmap(self, name)

    def clear_bitmap(self, name: str) -> None:
        from . import bitmaps

        bitmaps.clear_bitmap(self, name)

    def set_bitmap_enabled(self, name: str, enabled: bool) -> None:
        from . import bitmaps

        bitmaps.set_bitmap_enabled(self, name, enabled)

    def set_bitmaps_in_use(self, names: list[str], in_use: bool) -> None:
        from . import bitmaps

        bitmaps.set_in_use(self, names, in_use)

    def bitmap_bits(self, name: str) -> tuple[bytes, int]:
        """A bitmap's bits and its granularity."""
        from . import bitmaps

        bm = [b for b in bitmaps.read_directory(self) if b.name == name]
        return bitmaps.bitmap_bits(self, name), (bm[0].granularity if bm else 0)

    def merge_bitmap(self, dst: str, src_bits: bytes, src_granularity: int) -> None:
        from . import bitmaps

        bitmaps.merge_bitmap(self, dst, src_bits, src_granularity)

    def check(self, repair: str | None = None) -> CheckResult:
        from .check import check_image

        return check_image(self, repair)

    amend_options = _AmendOptions()

    def amend(self, options: dict[str, Any], force: bool = False) -> None:
        """Change options of the image in place (``qemu-img amend``)."""
        from .amend import amend_image

        amend_image(self, options, force)

    def info(self) -> ImageInfo:
        h = self.h
        # qemu-img's keys in qemu-img's order
        spec: dict[str, Any] = {
            "compat": "1.1" if h.version >= 3 else "0.10",
            "compression-type": "zstd" if h.compression_type == 1 else "zlib",
        }
        if h.version >= 3:
            spec["lazy-refcounts"] = bool(self.refs.lazy)
        listed = self.bitmaps()
        if listed:
            spec["bitmaps"] = listed
        spec["refcount-bits"] = h.refcount_bits
        if h.version >= 3:
            spec.update({"corrupt": self.corrupt, "extended-l2": self.extl2})
        names = h.feature_names()
        if self.has_data_file:
            spec["data-file"] = h.data_file
            spec["data-file-raw"] = self.data_file_raw
        if h.incompatible_features:
            spec["incompatible-features"] = describe_bits(h.incompatible_features, 0, names)
        return ImageInfo(self.filename, self.format_name, self.size,
                         _actual_size(self.filename), self.cs, h.backing_file,
                         h.backing_format, bool(h.incompatible_features & INCOMPAT_DIRTY),
                         spec)
