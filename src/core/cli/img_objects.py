"""qemu-img's ``--object secret,...`` and ``--image-opts`` for ``vmforge img``.

- ``--object secret,id=ID,data=TEXT`` (or ``file=PATH``; ``format=raw|base64``)
  defines a secret; ``-o key-secret=ID`` (create, convert's target, measure) and
  ``key-secret=ID`` in image options hand its bytes to the format as the open or
  create option ``passphrase`` (what ``vmforge-luks`` takes).  A secret's data is
  never printed: the ``Formatting`` line shows ``key-secret=ID``.
- ``--image-opts``: the image arguments are option strings such as
  ``driver=luks,file.filename=disk.img,key-secret=sec0`` instead of file names.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

from vmforge.config import parse_opts
from vmforge.errors import VmforgeError

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
        if not self.image_opts:
            return path, fmt, {}
        opts: dict[str, Any] = parse_opts(path)
        filename = opts.pop("file.filename", None) or opts.pop("filename", None)
        if not filename:
            raise ObjectError(f"--image-opts {path!r}: needs file.filename=")
        driver = opts.pop("driver", None) or fmt
        opts.pop("file.driver", None)
        return str(filename), driver, self.resolve_secret(
            {k.replace("-", "_") if k not in KEY_SECRET else k: v for k, v in opts.items()})


_current = ImageContext()


def context() -> ImageContext:
    """The running command's context (set by :func:`configure`)."""
    return _current


def configure(args: argparse.Namespace) -> None:
    """Take ``--object`` and ``--image-opts`` from a parsed command line."""
    global _current
    _current = ImageContext(getattr(args, "objects", None) or [],
                            bool(getattr(args, "image_opts", False)))


def add_object_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--object", dest="objects", action="append", default=[],
                   metavar="secret,id=ID,data=TEXT|file=PATH",
                   help="define a secret (for key-secret=ID)")
    p.add_argument("--image-opts", action="store_true", dest="image_opts",
                   help="image arguments are option strings (driver=,file.filename=,...)")
