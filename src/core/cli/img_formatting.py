"""The ``Formatting '...'`` line of ``vmforge img create``, as qemu-img 7.2 prints it.

qemu-img prints the create options (``qemu_opts_print``) in the order of the
format's option list followed by the file protocol's, each option given on
the command line and each one that has a default *string* in QEMU (other
defaults are not shown); size-typed options given are shown in bytes, the
others as typed.  Options a table does not name follow in the order given;
a format QEMU lacks shows its size and then what was given.
"""

from __future__ import annotations

from vmforge.block.driver import parse_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["QEMU_CREATE_OPTIONS", "formatting_line"]

_CRYPTO = ("key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg",
           "hash-alg", "iter-time")
_QCOW2_CRYPTO = tuple(f"encrypt.{n}" for n in _CRYPTO)

#: per format: (option, the default qemu-img 7.2 shows or None), in its order
QEMU_CREATE_OPTIONS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "raw": (("size", None),),
    "qcow2": (("encryption", None), ("encrypt.format", None),
              *((n, None) for n in _QCOW2_CRYPTO),
              ("cluster_size", "65536"), ("extended_l2", "off"), ("preallocation", None),
              ("compression_type", "zlib"), ("size", None), ("compat", None),
              ("backing_file", None), ("backing_fmt", None), ("data_file", None),
              ("data_file_raw", None), ("lazy_refcounts", "off"), ("refcount_bits", "16")),
    "qcow": (("size", None), ("backing_file", None), ("backing_fmt", None),
             ("encryption", None), ("encrypt.format", None),
             ("encrypt.key-secret", None)),
    "qed": (("size", None), ("backing_file", None), ("backing_fmt", None),
            ("cluster_size", "65536"), ("table_size", None)),
    "vdi": (("size", None), ("static", "off")),
    "vpc": (("size", None), ("subformat", None), ("force_size", None)),
    "vhdx": (("size", None), ("log_size", "1048576"), ("block_size", "0"),
             ("subformat", None), ("block_state_zero", None)),
    "vmdk": (("size", None), ("adapter_type", None), ("backing_file", None),
             ("backing_fmt", None), ("compat6", "off"), ("hwversion", "undefined"),
             ("toolsversion", None), ("subformat", None), ("zeroed_grain", None)),
    "parallels": (("size", None), ("cluster_size", "1048576")),
    "luks": (("size", None), *((n, None) for n in _CRYPTO)),
}

#: the file protocol's create options, appended to every format's (file-posix.c)
_FILE_PROTOCOL = (("size", None), ("nocow", None), ("preallocation", None),
                  ("extent_size_hint", None))

#: options of QEMU type size or number: shown in bytes when given
_SIZES = {"size", "cluster_size", "log_size", "block_size", "extent_size_hint",
          "table_size", "refcount_bits", "iter-time", "encrypt.iter-time"}


def _key(name: str) -> str:
    return name.replace("-", "_")


def formatting_line(filename: str, fmt: str, size: int, options: dict[str, Any]) -> str:
    """``Formatting 'FILE', fmt=FMT ...`` for options as given (``key-secret=ID``, never
    the secret)."""
    given = {_key(k): (k, v) for k, v in options.items() if v is not None}
    given["size"] = ("size", size)
    shown: list[str] = []
    order = QEMU_CREATE_OPTIONS.get(fmt)
    if order is not None:
        seen: set[str] = set()
        for name, default in (*order, *_FILE_PROTOCOL):
            key = _key(name)
            if key in seen:
                continue
            seen.add(key)
            if key in given:
                shown.append(f"{name}={_show(name, given.pop(key)[1])}")
            elif default is not None:
                shown.append(f"{name}={default}")
    else:
        shown.append(f"size={size}")
        given.pop("size")
    shown.extend(f"{name}={_show(name, v)}" for name, v in given.values())
    return f"Formatting '{filename}', fmt={fmt} " + " ".join(shown)


def _show(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if name in _SIZES and isinstance(value, str):
        try:
            return str(parse_size(value))
        except ValueError:
            return value
    text = str(value)
    return text.replace(",", ",,")     # qemu's escaped_print
