"""``qemu-img amend`` for qcow2 (QEMU 7.2's ``qcow2_amend_options``).

What can change on an existing image: ``compat`` (0.10 <-> 1.1),
``lazy_refcounts``, ``refcount_bits`` (the refcount structure is rebuilt at
the new width), ``size``, ``backing_file``/``backing_fmt``; everything is
checked before anything changes.  The create-only options are refused in
qemu-img's words.
"""

from __future__ import annotations

from vmforge.block import BlockError, CreateOption, UnsupportedOperation

from .header import (
    COMPAT_LAZY_REFCOUNTS,
    EXT_FEATURE_TABLE,
    HEADER_LEN_WITH_COMPRESSION,
    INCOMPAT_DIRTY,
    V2_HEADER_LEN,
    feature_table_extension,
)
from .l2 import OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO, table_from_bytes, table_to_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .driver import Qcow2

#: the options ``qemu-img amend -f qcow2`` takes (``-o help`` lists them)
AMEND_OPTIONS: dict[str, CreateOption] = {
    "backing_file": CreateOption("backing_file", str, None, "File name of a base image"),
    "backing_fmt": CreateOption("backing_fmt", str, None, "Image format of the base image"),
    "compat": CreateOption("compat", str, None,
                           "Compatibility level (v2 [0.10] or v3 [1.1])"),
    "data_file": CreateOption("data_file", str, None, "File name of an external data file"),
    "data_file_raw": CreateOption("data_file_raw", bool, None,
                                  "The external data file must stay valid as a raw image"),
    "lazy_refcounts": CreateOption("lazy_refcounts", bool, None, "Postpone refcount updates"),
    "refcount_bits": CreateOption("refcount_bits", int, None,
                                  "Width of a reference count entry in bits"),
    "size": CreateOption("size", int, None, "Virtual disk size"),
}

_VERSIONS = {"0.10": 2, "v2": 2, "1.1": 3, "v3": 3}


def _parse(img: Qcow2, options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        opt = AMEND_OPTIONS.get(name)
        if opt is None:
            if name in type(img).create_options or key.startswith("encrypt."):
                raise BlockError(f"Invalid parameter '{key}': this option is only "
                                 "supported for image creation")
            raise BlockError(f"Invalid parameter '{key}'")
        if name == "refcount_bits":
            bits = int(value) if str(value).isdigit() else -1
            if bits <= 0 or bits > 64 or bits & (bits - 1):
                raise BlockError("Refcount width must be a power of two and may not "
                                 "exceed 64 bits")
            out[name] = bits
            continue
        try:
            out[name] = opt.parse(value)
        except ValueError as exc:
            raise BlockError(str(exc)) from None
    if "compat" in out and out["compat"] not in _VERSIONS:
        raise BlockError(f"Unknown compatibility level {out['compat']}")
    return out


def amend_image(img: Qcow2, options: dict[str, Any], force: bool = False) -> None:
    """Change the image's options in place (see the module documentation)."""
    img._check_writable()
    o = _parse(img, options)
    h = img.h
    old_version = h.version
    version = _VERSIONS[o["compat"]] if "compat" in o else old_version
    lazy = o.get("lazy_refcounts")
    bits = o.get("refcount_bits", h.refcount_bits)
    if lazy and version < 3:
        raise BlockError("Lazy refcounts only supported with compatibility level 1.1 "
                         "and above (use compat=1.1 or greater)")
    if bits != 16 and version < 3:
        raise BlockError("Refcount widths other than 16 bits require compatibility level "
                         "1.1 or above (use compat=1.1 or greater)")
    if "data_file" in o and not img.has_data_file:
        raise BlockError("data-file can only be set for images that use an external "
                         "data file")
    if o.get("data_file_raw") is not None and o["data_file_raw"] != img.data_file_raw:
        raise UnsupportedOperation("data-file-raw cannot be changed on an existing image",
                                   img.filename)
    if "data_file" in o and o["data_file"] != h.data_file:
        raise UnsupportedOperation("changing the data-file name is not supported",
                                   img.filename)
    if version < old_version:
        _check_downgrade(img, bits)
    with img.lock:
        img._barrier()
        if version > old_version:
            _set_version(img, version)
        if bits != h.refcount_bits:
            _change_refcount_width(img, bits)
        if "backing_file" in o or "backing_fmt" in o:
            img.change_backing_file(o.get("backing_file", h.backing_file),
                                    o.get("backing_fmt", h.backing_format))
        if lazy is not None:
            _set_lazy(img, lazy)
    if "size" in o and o["size"] != img.size:
        img.truncate(o["size"])
    if version < old_version:
        with img.lock:
            _downgrade(img)


def _write_cluster0(img: Qcow2) -> None:
    img.f.sync()
    img.f.pwrite(0, img.h.pack())
    img.f.sync()


def _set_version(img: Qcow2, version: int) -> None:
    h = img.h
    h.version = version
    if version >= 3:
        h.header_length = HEADER_LEN_WITH_COMPRESSION
        if h.ext(EXT_FEATURE_TABLE) is None and img.cs > 4096:
            h.extensions.append(feature_table_extension())
    else:
        h.header_length = V2_HEADER_LEN
        h.extensions = [e for e in h.extensions if e.type != EXT_FEATURE_TABLE]
        h.compatible_features = h.autoclear_features = 0
    _write_cluster0(img)


def _set_lazy(img: Qcow2, on: bool) -> None:
    h = img.h
    if on == bool(h.compatible_features & COMPAT_LAZY_REFCOUNTS):
        return
    img.refs.write_back()
    if not on and img._marked_dirty:          # the refcounts are right again
        img._set_incompat(h.incompatible_features & ~INCOMPAT_DIRTY)
        img._marked_dirty = False
    h.compatible_features ^= COMPAT_LAZY_REFCOUNTS
    img.refs.lazy = on
    _write_cluster0(img)


def _change_refcount_width(img: Qcow2, bits: int) -> None:
    """A new refcount structure at the new width; the old one is then freed."""
    from .check import check_image, count_references
    from .rebuild import rebuild_refcounts

    counts, nfile = count_references(img)
    top = (1 << bits) - 1
    for c, v in counts.items():
        if v > top:
            raise BlockError(f"Cannot decrease refcount entry width to {bits} bits: "
                             f"cluster at offset {c << img.cb:#x} has a refcount of {v}",
                             img.filename)
    rebuild_refcounts(img, counts, nfile, order=bits.bit_length() - 1)
    res = check_image(img, "leaks")       # the old structure is leaked now: free it
    if res.corruptions or res.check_errors:
        raise BlockError("refcount structure inconsistent after changing its width",
                         img.filename)


def _check_downgrade(img: Qcow2, bits: int) -> None:
    h = img.h
    if bits != 16:
        raise BlockError("compat=0.10 requires refcount_bits=16")
    if img.has_data_file:
        raise BlockError("Cannot downgrade an image with a data file")
    bad = h.incompatible_features & ~INCOMPAT_DIRTY
    if bad:
        raise BlockError(f"Cannot downgrade an image with incompatible features {bad:#x} "
                         "set")


def _downgrade(img: Qcow2) -> None:
    """compat=0.10: refcounts made exact, zero clusters expanded, a version 2 header."""
    h = img.h
    img._barrier()
    img.refs.write_back()
    if h.incompatible_features & INCOMPAT_DIRTY:
        img._set_incompat(h.incompatible_features & ~INCOMPAT_DIRTY)
        img._marked_dirty = False
    img.refs.lazy = False
    l1s = [img.l1] + [img._read_l1(s.l1_table_offset, s.l1_size, f"snapshot {s.id} L1")
                      for s in img._snaps]
    done: set[int] = set()
    for l1 in l1s:
        for ent in l1:
            off = ent & OFFSET_MASK
            if off and off not in done:
                done.add(off)
                _expand_zero_clusters(img, off)
    _set_version(img, 2)


def _expand_zero_clusters(img: Qcow2, l2off: int) -> None:
    """Version 2 has no zero flag: a zero cluster without a backing file becomes
    unallocated; otherwise it gets a cluster of zeros."""
    tbl = table_from_bytes(img.f.read_table(l2off, img.cs, "L2 table"))
    changed = False
    for j, ent in enumerate(tbl):
        if not ent & OFLAG_ZERO:
            continue
        host = ent & OFFSET_MASK
        if not host and not img.h.backing_file:
            tbl[j] = 0
        else:
            if not host:
                host = img.refs.alloc(1)
            img.f.pwrite(host, bytes(img.cs))
            tbl[j] = host | (OFLAG_COPIED if img.refs.get(host >> img.cb) == 1 else 0)
        changed = True
    if changed:
        img.f.sync()
        img.f.pwrite(l2off, table_to_bytes(tbl))
        img.l2cache.drop(l2off)
