"""qemu-img's ``--object secret,...`` and ``--image-opts`` for ``vmforge img``.

- ``--object secret,id=ID,data=TEXT`` (or ``file=PATH``; ``format=raw|base64``)
  defines a secret; ``-o key-secret=ID`` (create, convert's target, measure) and
  ``key-secret=ID`` in image options hand its bytes to the format as the open or
  create option ``passphrase`` (what ``vmforge-luks`` takes).  A secret's data is
  never printed: the ``Formatting`` line shows ``key-secret=ID``.
- ``--image-opts``: the image arguments are option strings such as
  ``driver=luks,file.filename=disk.img,key-secret=sec0`` instead of file names.
- QEMU's pseudo-protocols of a file name, with or without ``--image-opts``:
  ``json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}`` (nested
  or flattened ``"file.filename"`` keys; ``-f`` wins over its ``driver``, as in
  qemu-img) and ``file:NAME`` (the file protocol: ``NAME`` taken literally, even
  with a colon or a ``json:`` in it).
"""

from __future__ import annotations

from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from vmforge.cli.img_getopt import ArgumentAdder

__all__ = ["ImageContext", "ObjectError", "add_object_options", "context"]

KEY_SECRET = ("key-secret", "key_secret")


class ObjectError(VmforgeError, ValueError):
    """A ``--object`` or ``--image-opts`` string that cannot be used."""


class ImageContext:
    """The secrets and image-option mode of one ``vmforge img`` command."""

    def __init__(self, objects: list[str] | None = None, image_opts: bool = False) -> None:
        self.secrets: dict[str, bytes] = {}
        self.image_opts = image_opts
        for text in objects or []:
            self._add_object(text)

    def _add_object(self, text: str) -> None:
        from vmforge.config import parse_opts  # here: few commands have an --object

        opts = parse_opts(text, implied="qom-type")
        kind = opts.pop("qom-type", "")
        if kind != "secret":
            raise ObjectError(f"--object {kind or text!r}: only 'secret' objects are supported")
        ident = opts.pop("id", None)
        if not ident:
            raise ObjectError("--object secret: needs id=")
        if ("data" in opts) == ("file" in opts):
            raise ObjectError(f"--object secret,id={ident}: give exactly one of data= or file=")
        fmt = opts.pop("format", "raw")
        if fmt not in ("raw", "base64"):
            raise ObjectError(f"--object secret,id={ident}: format={fmt!r} (raw or base64)")
        if "data" in opts:
            raw = str(opts.pop("data")).encode()
        else:
            path = str(opts.pop("file"))
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise ObjectError(f"--object secret,id={ident}: {path}: "
                                  f"{exc.strerror or exc}") from None
        if opts:
            raise ObjectError(f"--object secret,id={ident}: unknown option "
                              f"{sorted(opts)[0]!r}")
        if fmt == "base64":
            import base64

            try:
                raw = base64.b64decode(raw, validate=True)
            except ValueError:
                raise ObjectError(f"--object secret,id={ident}: data is not base64") from None
        if ident in self.secrets:
            raise ObjectError(f"--object secret,id={ident} is given twice")
        self.secrets[ident] = raw

    def resolve_secret(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with ``key-secret=ID`` replaced by the secret as ``passphrase``."""
        out = dict(options)
        for key in KEY_SECRET:
            if key in out:
                ident = str(out.pop(key))
                if ident not in self.secrets:
                    raise ObjectError(f"no secret with id {ident!r} (define it with "
                                      f"--object secret,id={ident},data=...)")
                out["passphrase"] = self.secrets[ident]
        return out

    def resolve_image(self, path: str, fmt: str | None) -> tuple[str, str | None,
                                                                 dict[str, Any]]:
        """(file, format, open options) for an image argument."""
        if path.startswith(JSON_PREFIX):
            from vmforge.block.layers import is_nbd_name

            if is_nbd_name(path):        # an NBD export: its name is opened as it is
                return path, fmt, {}
            return self._from_options(path, json_options(path), fmt, fmt_wins=True)
        if self.image_opts:
            from vmforge.config import parse_opts

            return self._from_options(path, parse_opts(path), fmt)
        return target_filename(path), fmt, {}

    def _from_options(self, path: str, opts: dict[str, Any], fmt: str | None,
                      fmt_wins: bool = False) -> tuple[str, str | None, dict[str, Any]]:
        driver = opts.pop("driver", None)
        if isinstance(opts.get("file"), str):     # a node name: vmforge img has no nodes
            raise ObjectError(f"Could not open '{path}': Cannot find device='{opts['file']}' "
                              f"nor node-name='{opts['file']}'")
        filename = opts.pop("file.filename", None) or opts.pop("filename", None)
        if not filename:
            raise ObjectError(f"--image-opts {path!r}: needs file.filename=")
        if driver == "file":      # the protocol alone: its bytes as they are
            driver = "raw"
        driver = (fmt or driver) if fmt_wins else (driver or fmt)
        for key in [k for k in opts if k == "file.driver" or k.startswith("file.")]:
            if key == "file.driver" and opts[key] != "file":
                raise ObjectError(f"Could not open '{path}': only the file protocol is "
                                  f"supported, not {opts[key]!r}")
            opts.pop(key)
        return str(filename), driver, self.resolve_secret(
            {k.replace("-", "_") if k not in KEY_SECRET else k: v for k, v in opts.items()})


JSON_PREFIX = "json:"
FILE_PREFIX = "file:"


def target_filename(path: str) -> str:
    """The file an image argument names: ``file:NAME`` is ``NAME``, literally; a relative
    ``NAME`` that would read as a protocol (``a:b``) becomes ``./a:b``, as QEMU shows it."""
    if not path.startswith(FILE_PREFIX):
        return path
    name = path[len(FILE_PREFIX):]
    if ":" in name.split("/")[0] and not name.startswith("/"):
        name = "./" + name
    return name


def json_options(path: str) -> dict[str, Any]:
    """``json:{...}`` as flat options (``{"file": {"filename": F}}`` -> ``file.filename``)."""
    import json

    try:
        tree = json.loads(path[len(JSON_PREFIX):])
    except json.JSONDecodeError as exc:
        raise ObjectError(f"Could not open '{path}': Could not parse the JSON options: "
                          f"JSON parse error, {exc.msg}") from None
    if not isinstance(tree, dict):
        raise ObjectError(f"Could not open '{path}': Invalid JSON object given")
    out: dict[str, Any] = {}

    def flatten(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                flatten(f"{prefix}{key}.", value)
            else:
                out[f"{prefix}{key}"] = value

    flatten("", tree)
    return out


_current = ImageContext()


def context() -> ImageContext:
    """The running command's context (set by :func:`configure`)."""
    return _current


def configure(args: argparse.Namespace) -> None:
    """Take ``--object`` and ``--image-opts`` from a parsed command line."""
    global _current
    _current = ImageContext(getattr(args, "objects", None) or [],
                            bool(getattr(args, "image_opts", False)))


def add_object_options(p: ArgumentAdder) -> None:
    p.add_argument("--object", dest="objects", action="append", default=[],
                   metavar="secret,id=ID,data=TEXT|file=PATH",
                   help="define a secret (for key-secret=ID)")
    p.add_argument("--image-opts", action="store_true", dest="image_opts",
                   help="image arguments are option strings (driver=,file.filename=,...)")
