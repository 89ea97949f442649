"""The vmdk format driver: VMware's virtual disks, read and write.

An image is a list of extents put end to end (:mod:`vmforge_vmdk.extents`):

- monolithicSparse: one sparse extent, its descriptor embedded at sector 1;
- streamOptimized: the same with compressed grains behind grain markers;
- monolithicFlat, twoGbMaxExtentFlat, twoGbMaxExtentSparse: a descriptor file
  naming extent files (relative names are relative to the descriptor's folder).

``create`` lays the files out as qemu-img does (the same bytes but for the
random ``CID``); writes allocate grains at the end of the file as QEMU does,
updating the grain table and its redundant copy; the first write of each open
gives the image a new ``CID``, as QEMU does (overlays record their parent's).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
    UnsupportedOperation,
)
from vmforge.block.mapped import FileImage, merge_extents, open_image_file
from vmforge_vmdk.extents import FlatExtent, SparseExtent
from vmforge_vmdk.layout import (
    ADAPTER_TYPES,
    DESCRIPTOR_TYPES,
    MAX_DESC,
    MAX_SECTOR,
    SECTOR,
    SPLIT_SIZE,
    SUBFORMATS,
    DescriptorError,
    Header,
    create_type,
    decompose,
    extent_lines,
    gd_bytes,
    make_descriptor,
    new_sparse_header,
    parent_hint,
    read_cid,
    with_cid,
)
from vmforge_vmdk.probe import MAGIC, VMDK3_MAGIC
from vmforge_vmdk.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

AnyExtent = SparseExtent | FlatExtent


def _text(raw: bytes) -> str:
    """A descriptor's text: up to the first NUL."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _create_sparse(path: str, size: int, compress: bool, zeroed_grain: bool) -> None:
    geo = new_sparse_header(size, compress, zeroed_grain)
    h = geo.header
    if h.grain_offset > MAX_SECTOR:
        raise BlockError(f"image size {size} is too large for a sparse VMDK extent", path)
    with open(path, "wb") as f:
        f.write(h.pack())
        f.truncate(h.grain_offset * SECTOR)
        f.seek(h.rgd_offset * SECTOR)
        f.write(gd_bytes(geo, h.rgd_offset))
        f.seek(h.gd_offset * SECTOR)
        f.write(gd_bytes(geo, h.gd_offset))


def _create_flat(path: str, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


_DATA_BIT = int(BlockStatus.DATA)
_DATA_OR_COMPRESSED = _DATA_BIT | int(BlockStatus.COMPRESSED)


class Vmdk(FileImage):
    """A VMDK image (any of qemu-img's five subformats)."""

    format_name = "vmdk"
    supports_backing = True
    supports_compressed_writes = True
    granularity = 65536
    create_options = {
        "subformat": CreateOption("subformat", str, "monolithicSparse",
                                  "VMDK subformat: " + " | ".join(SUBFORMATS), SUBFORMATS,
                                  refused="invalid parameter value: {value}"),
        "adapter_type": CreateOption("adapter_type", str, "ide",
                                     "virtual adapter type: " + ", ".join(ADAPTER_TYPES),
                                     ADAPTER_TYPES, refused="invalid parameter value: {value}"),
        "hwversion": CreateOption("hwversion", str, None, "VMDK hardware version (4)"),
        "toolsversion": CreateOption("toolsversion", str, None,
                                     "VMware guest tools version (2147483647)"),
        "compat6": CreateOption("compat6", bool, False, "VMDK version 6 image"),
        "zeroed_grain": CreateOption("zeroed_grain", bool, False,
                                     "efficient zero writes with the zeroed-grain entry"),
        "backing_file": CreateOption("backing_file", str, None, "file name of a base image"),
        "backing_fmt": CreateOption("backing_fmt", str, None, "must be vmdk if given"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, extents: list[AnyExtent],
                 create_type: str, desc_text: str, desc_at: int, desc_room: int | None) -> None:
        super().__init__(filename, readonly, fd)
        self.extents = extents
        self.create_type = create_type
        self.desc_text = desc_text
        self.desc_at = desc_at
        #: bytes the embedded descriptor may take (None: a descriptor file)
        self.desc_room = desc_room
        self._starts: list[int] = []
        self._live: list[AnyExtent] = []
        pos = 0
        for ext in extents:
            if ext.size:
                self._starts.append(pos)
                self._live.append(ext)
            pos += ext.size
        self._size = pos
        self.cid = 0
        self.parent_cid = 0xFFFFFFFF
        self._parent: str | None = None
        self._cid_updated = False
        sparse = [e for e in extents if isinstance(e, SparseExtent)]
        if sparse:
            self.granularity = sparse[0].cluster_size  # type: ignore[misc]

    # -- probe, create ------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        sub, backing = opts["subformat"], opts["backing_file"]
        size = -(-size // SECTOR) * SECTOR
        split = sub.startswith("twoGbMaxExtent")
        flat = sub.endswith("Flat")
        compress = sub == "streamOptimized"
        if opts["backing_fmt"] not in (None, "vmdk"):
            raise BlockError("backing_file must be a vmdk image", path)
        if flat and backing:
            raise BlockError("Flat image can't have backing file", path)
        if flat and opts["zeroed_grain"]:
            raise BlockError("Flat image can't enable zeroed grain", path)
        hwversion = None if opts["hwversion"] == "undefined" else opts["hwversion"]
        if opts["compat6"]:
            if hwversion:
                raise BlockError("compat6 cannot be enabled with hwversion set", path)
            hwversion = "6"
        parent_cid = 0xFFFFFFFF
        if backing:
            parent_cid = cls._parent_cid(path, backing)
        directory, prefix, postfix = decompose(path)
        lines: list[str] = []

        def line(sectors: int, name: str) -> str:
            base = os.path.basename(name)
            return (f'RW {sectors} FLAT "{base}" 0\n' if flat
                    else f'RW {sectors} SPARSE "{base}"\n')
        try:
            if split or flat:
                _create_flat(path, 0)
                created, idx = 0, 1
                step = SPLIT_SIZE if split else size
                while created < size:
                    cur = min(size - created, step)
                    name = (f"{prefix}-{'f' if flat else 's'}{idx:03d}{postfix}" if split
                            else f"{prefix}-flat{postfix}")
                    if flat:
                        _create_flat(directory + name, cur)
                    else:
                        _create_sparse(directory + name, cur, compress, opts["zeroed_grain"])
                    lines.append(line(cur // SECTOR, name))
                    created += cur
                    idx += 1
            else:
                _create_sparse(path, size, compress, opts["zeroed_grain"])
                lines.append(line(size // SECTOR, path))
            import random  # (a new image's CID: not imported to open one)

            desc = make_descriptor(random.getrandbits(32), parent_cid, sub, backing, lines,
                                   hwversion or "4", size, opts["adapter_type"],
                                   opts["toolsversion"] or "2147483647").encode()
            with open(path, "r+b") as f:
                if split or flat:
                    f.write(desc)
                    f.truncate(len(desc))
                else:
                    f.seek(SECTOR)
                    f.write(desc)
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", exc.filename or path) from exc

    @classmethod
    def _parent_cid(cls, path: str, backing: str) -> int:
        full = backing if os.path.isabs(backing) else os.path.join(os.path.dirname(path),
                                                                   backing)
        try:
            with cls.open(full) as parent:
                return parent.cid
        except BlockError as exc:
            raise BlockError(f"Failed to read parent CID of {backing}: {exc}", path) from exc

    # -- open --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            file_size = os.fstat(fd).st_size
            if file_size < 4:
                raise BlockError("File is too small, not a valid image", path)
            head = os.pread(fd, min(file_size, MAX_DESC), 0)
            opened: list[AnyExtent] = []
            try:
                drv = cls._open(path, readonly, fd, head, opened)
                drv._read_ids()
            except BaseException:
                for ext in opened:
                    if ext.fd != fd:
                        os.close(ext.fd)
                raise
            return drv

    @classmethod
    def _open(cls, path: str, readonly: bool, fd: int, head: bytes,
              opened: list[AnyExtent]) -> Self:
        if head[:4] == VMDK3_MAGIC:
            raise BlockError("VMDK3 (COWD) images are not supported", path)
        if head[:4] == MAGIC:
            if len(head) < 79:
                raise CorruptImageError(f"header truncated to {len(head)} bytes", path, 0,
                                        "header")
            h = Header.unpack(head)
            if h.capacity == 0 and h.desc_offset:   # a descriptor behind a sparse header
                at = h.desc_offset * SECTOR
                raw = os.pread(fd, MAX_DESC, at) if at < os.fstat(fd).st_size else b""
                return cls._descriptor(path, readonly, fd, _text(raw), at, opened)
            ext = SparseExtent.load(path, fd, readonly)
            ext.kind = ""
            opened.append(ext)
            hd = ext.header
            room = min(hd.desc_size * SECTOR, MAX_DESC)
            at = hd.desc_offset * SECTOR
            size = os.fstat(fd).st_size
            text = (_text(os.pread(fd, room, at)) if hd.desc_offset and room and at < size
                    else "")
            kind = "streamOptimized" if ext.compressed else "monolithicSparse"
            return cls(path, readonly, fd, [ext], kind, text, at, room)
        return cls._descriptor(path, readonly, fd, _text(head), 0, opened)

    @classmethod
    def _descriptor(cls, path: str, readonly: bool, fd: int, text: str, at: int,
                    opened: list[AnyExtent]) -> Self:
        try:
            kind = create_type(text)
        except DescriptorError:
            raise BlockError("image not in VMDK format (no KDMV magic, no descriptor "
                             "with a createType)", path) from None
        if kind not in DESCRIPTOR_TYPES:
            raise BlockError(f"Unsupported image type '{kind}'", path)
        try:
            lines = extent_lines(text)
        except DescriptorError as exc:
            raise CorruptImageError(str(exc), path, at, "descriptor") from None
        if not lines:
            raise CorruptImageError("the descriptor names no extents", path, at, "descriptor")
        base = os.path.dirname(path)
        sectors = 0
        for ln in lines:
            ext_path = ln.filename if os.path.isabs(ln.filename) else os.path.join(
                base, ln.filename)
            if ln.kind == "SESPARSE":
                raise BlockError(f"seSparse extents are not supported ({ln.filename})", path)
            try:
                efd = os.open(ext_path, (os.O_RDONLY if readonly else os.O_RDWR)
                              | os.O_CLOEXEC)
            except OSError as exc:
                raise BlockError(f"cannot open extent {ext_path}: {exc.strerror}",
                                 path) from exc
            if ln.kind in ("FLAT", "VMFS"):
                ext: AnyExtent = FlatExtent(ext_path, efd, ln.sectors * SECTOR,
                                            ln.offset * SECTOR, ln.kind)
                opened.append(ext)
            else:
                try:
                    magic = os.pread(efd, 4, 0)
                    if magic != MAGIC:
                        raise BlockError("extent not in VMDK sparse format (bad magic)",
                                         ext_path)
                    ext = SparseExtent.load(ext_path, efd, readonly, sectors)
                except BaseException:
                    os.close(efd)
                    raise
                ext.kind = ln.kind
                opened.append(ext)
            sectors += ext.size // SECTOR
        return cls(path, readonly, fd, list(opened), kind, text, at, None)

    def _read_ids(self) -> None:
        try:
            self.cid = read_cid(self.desc_text, False)
            self.parent_cid = read_cid(self.desc_text, True)
            self._parent = parent_hint(self.desc_text)
        except DescriptorError as exc:
            raise CorruptImageError(str(exc), self.filename, self.desc_at,
                                    "descriptor") from None
        for ext in self.extents:
            if isinstance(ext, SparseExtent):
                ext.backing = self._parent

    # -- the image ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def backing_filename(self) -> str | None:
        return self._parent

    @property
    def backing_format(self) -> str | None:
        return "vmdk" if self._parent else None

    def _route(self, offset: int, length: int) -> Iterator[tuple[AnyExtent, int, int, int]]:
        """(extent, offset in it, length, offset in the image) of each piece."""
        end = offset + length
        while offset < end:
            k = bisect.bisect_right(self._starts, offset) - 1
            start, ext = self._starts[k], self._live[k]
            n = min(end - offset, start + ext.size - offset)
            yield ext, offset - start, n, offset
            offset += n

    def _route_views(self, offset: int, views: Sequence[memoryview]
                     ) -> Iterator[tuple[AnyExtent, int, memoryview]]:
        for v in views:
            for ext, at, n, image_at in self._route(offset, v.nbytes):
                pos = image_at - offset
                yield ext, at, v[pos:pos + n]
            offset += v.nbytes

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = self._checked_views(offset, buffers)
        for ext, at, part in self._route_views(offset, views):
            ext.preadv(at, [part])

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each extent's pieces of all the runs with one call of its own
        ``preadv_runs``: a sparse extent reads the grains that follow each other in
        its file (what ``convert`` reads: a batch per 2 MiB) with one ``preadv``."""
        by_extent: dict[int, tuple[AnyExtent, list[tuple[int, memoryview]]]] = {}
        for offset, buf in runs:
            for ext, at, part in self._route_views(offset, self._checked_views(offset, [buf])):
                by_extent.setdefault(id(ext), (ext, []))[1].append((at, part))
        for ext, parts in by_extent.values():
            ext.preadv_runs(parts)

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = self._checked_views(offset, buffers)
        self._touch()
        for ext, at, part in self._route_views(offset, views):
            ext.pwritev(at, [part])

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each extent's pieces of all the runs, in order, with one call of its own
        ``pwritev_runs``: a sparse extent writes a batch's new grains and their table
        entries with a few calls (what ``convert`` writes: a batch per 2 MiB)."""
        self._check_writable()
        by_extent: dict[int, tuple[AnyExtent, list[tuple[int, memoryview]]]] = {}
        for offset, buf in runs:
            for ext, at, part in self._route_views(offset, self._checked_views(offset, [buf])):
                by_extent.setdefault(id(ext), (ext, []))[1].append((at, part))
        self._touch()
        for ext, parts in by_extent.values():
            ext.pwritev_runs(parts)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        self._touch()
        for ext, at, n, _ in self._route(offset, length):
            ext.write_zeroes(at, n, may_unmap)

    def write_compressed(self, offset: int, data: bytes | memoryview) -> None:
        self._check_writable()
        mv = memoryview(data).cast("B")
        self._check_range(offset, mv.nbytes)
        self._touch()
        for ext, at, part in self._route_views(offset, [mv]):
            ext.write_compressed(at, part)

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if len(self._live) == 1 and self._starts[0] == 0:
            # one extent (a monolithic image): its extents, already merged and
            # naming its file, are the image's as they are (no tuple and no merge
            # again per extent: convert asks for thousands)
            yield from self._live[0].block_status(offset, length)
            return
        yield from merge_extents(self._runs(offset, length), self.filename)

    def plain_data_fd(self, extent: Extent) -> int | None:
        """The descriptor of the extent file holding ``extent`` (one of
        :meth:`block_status`'s) as the guest reads it from ``extent.host_offset``: an
        uncompressed grain's or a flat extent's data; ``None`` for zeros, compressed
        grains and what is not here (what ``convert`` reads through :meth:`preadv`)."""
        if extent.host_offset is None or int(extent.status) & _DATA_OR_COMPRESSED != _DATA_BIT:
            return None
        for ext in self._live:
            if ext.filename == extent.filename and not ext.compressed:
                return ext.fd
        return None

    def _runs(self, offset: int, length: int) -> Iterator[Any]:
        """(offset, length, status, host offset, the file it is in): QEMU's map names
        each extent's own file and its offset there."""
        for ext, at, n, image_at in self._route(offset, length):
            for e in ext.block_status(at, n):
                yield e.offset - at + image_at, e.length, e.status, e.host_offset, ext.filename

    def _touch(self) -> None:
        """The first change of each open gives the image a new CID (as QEMU)."""
        if self._cid_updated:
            return
        with self._lock:
            if self._cid_updated:
                return
            import random

            cid = random.getrandbits(32)
            try:
                text = with_cid(self.desc_text, cid)
            except DescriptorError as exc:
                raise CorruptImageError(str(exc), self.filename, self.desc_at,
                                        "descriptor") from None
            raw = text.encode("utf-8", "surrogateescape")
            if self.desc_room is None:   # a descriptor file: whole sectors, as QEMU
                old = len(self.desc_text.encode("utf-8", "surrogateescape"))
                room = -(-max(len(raw), old) // SECTOR) * SECTOR
            else:
                room = self.desc_room
            if len(raw) >= room and self.desc_room is not None:
                raise BlockError("the new CID does not fit in the embedded descriptor",
                                 self.filename)
            os.pwrite(self.fd, raw.ljust(room, b"\0"), self.desc_at)
            self.desc_text, self.cid, self._cid_updated = text, cid, True

    # -- flush, close, info, check -----------------------------------------------------------

    def _fds(self) -> list[int]:
        seen = [self.fd]
        for ext in self.extents:
            if ext.fd not in seen:
                seen.append(ext.fd)
        return seen

    def flush(self) -> None:
        if self.readonly or not self.sync or self.closed:
            return
        for fd in self._fds():
            try:
                os.fsync(fd)
            except OSError as exc:
                raise BlockError(f"flush failed: {exc.strerror}", self.filename) from exc

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            self.closed = True
            for ext in self.extents:
                if isinstance(ext, SparseExtent):
                    ext.closed = True
            for fd in self._fds():
                os.close(fd)

    def truncate(self, size: int) -> None:
        self._check_writable()
        raise UnsupportedOperation("format vmdk cannot be resized", self.filename)

    def _extent_info(self, ext: AnyExtent) -> dict[str, Any]:
        out: dict[str, Any] = {"virtual-size": ext.size, "filename": ext.filename}
        if not ext.flat:
            out["cluster-size"] = ext.cluster_size
        out["format"] = ext.kind
        if ext.compressed:
            out["compressed"] = True
        return out

    def info(self) -> ImageInfo:
        actual = sum(os.fstat(fd).st_blocks * SECTOR for fd in self._fds())
        first = self.extents[0]
        same = all(e.flat == first.flat and e.compressed == first.compressed
                   and (e.flat or e.cluster_size == first.cluster_size)
                   for e in self.extents)
        cluster = first.cluster_size if same and not first.flat else None
        return ImageInfo(self.filename, self.format_name, self.size, actual, cluster,
                         self._parent, self.backing_format, False, {
                             "cid": self.cid, "parent-cid": self.parent_cid,
                             "create-type": self.create_type,
                             "extents": [self._extent_info(e) for e in self.extents]})

    def check(self, repair: str | None = None) -> CheckResult:
        if repair:
            raise UnsupportedOperation("format vmdk cannot repair images", self.filename)
        result = CheckResult(self.filename, self.format_name)
        for ext in self.extents:
            if isinstance(ext, SparseExtent):
                with ext._lock:
                    bad, msgs = ext.problems()
            else:
                bad, msgs = ext.problems()
            result.corruptions += bad
            result.messages.extend(msgs)
        return result
