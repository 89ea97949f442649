"""Which driver reads an image: by name through the registry, or by probing.

Probing reads the first :data:`PROBE_SIZE` bytes of a file and asks every
installed driver's ``probe`` for a score; the highest score wins (ties go to
the name that sorts first).  A format whose distribution names its probe in the
entry-point group ``vmforge.block.probe`` is asked through that function, so
that probing imports no driver (start-up time); otherwise its class is loaded.
A format that declares its magic bytes (entry-point group ``vmforge.block.magic``)
is asked only about an image that holds them, so its probe module is not imported
for the others' images; a trailer's magic (offset ``end-N``) is looked for in the
file's last bytes, read once for all such formats.

As in QEMU, a guess of ``raw`` is refused for a writable open: a guest writing a
fake header into a raw image could otherwise make the host read it as another
format (CVE-2008-2004).
"""

from __future__ import annotations

import os

from vmforge.block.driver import BlockDriver, BlockError
from vmforge.lazy import lazy_logger

__all__ = ["PROBE_SIZE", "RAW_FORMAT", "driver_class", "format_names", "may_claim", "probe_format",
           "read_tail"]

log = lazy_logger(__name__)

#: how many leading bytes ``probe`` sees (QEMU's BLOCK_PROBE_BUF_SIZE)
PROBE_SIZE = 512
#: the format that probing may never pick for a writable open
RAW_FORMAT = "raw"


def driver_class(name: str) -> type[BlockDriver]:
    """The driver class registered as ``name`` in the group ``vmforge.block``.

    Raises the registry's ``PluginNotFound`` / ``PluginLoadError`` /
    ``PluginConflict`` (all :class:`vmforge.plugins.PluginError`).
    """
    from vmforge.plugins import registry

    return registry().load("block", name)  # type: ignore[return-value]


def format_names() -> list[str]:
    """Names of the installed (and not blocked) formats."""
    from vmforge.plugins import registry

    return registry().names("block")


def read_header(path: str) -> bytes:
    """The first :data:`PROBE_SIZE` bytes of ``path`` (fewer for a short file)."""
    try:
        with open(path, "rb") as f:
            return f.read(PROBE_SIZE)
    except OSError as exc:
        raise BlockError(f"could not open: {exc.strerror or exc}", path) from exc


def probe_format(path: str, *, writable: bool = False) -> str:
    """The name of the format that best claims the file at ``path``."""
    if os.path.isdir(path):
        raise BlockError("is a directory, not an image", path)
    best = probe_header(read_header(path), path)
    if best == RAW_FORMAT and writable:
        raise BlockError(
            "the image format was not given and probing guessed raw; a raw image whose "
            "format is guessed is never opened for writing (a guest could write a header "
            "of another format). Pass -f raw (format='raw') to open it writable", path)
    return best


def may_claim(header: bytes, magics: list[tuple[int, bytes]] | None,
              tail: bytes | None = None) -> bool:
    """Whether a probe whose format declares ``magics`` (the registry's
    :meth:`~vmforge.plugins.Registry.probe_magics`: (offset, bytes), None for none) can
    claim an image starting with ``header`` and ending with ``tail`` (for a negative
    offset, counted from the end; None: not known): it holds one of them, or is too
    short to tell."""
    if magics is None:
        return True
    n = len(header)
    for offset, magic in magics:
        if offset < 0:
            if tail is None or len(tail) < -offset:
                return True
            at = len(tail) + offset
            if tail[at:at + len(magic)] == magic:
                return True
        elif n < offset + len(magic) or header[offset:offset + len(magic)] == magic:
            return True
    return False


def read_tail(path: str, size: int) -> bytes | None:
    """The last ``size`` bytes of the file ``path`` (fewer for a short file), None when it
    cannot be read (a trailer's magic then tells nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (OSError, ValueError, TypeError):
        return None
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, max(0, end - size))
    except OSError:
        return None
    finally:
        os.close(fd)


def probe_header(header: bytes, path: str) -> str:
    """The format that best claims an image starting with ``header``."""
    from vmforge.plugins import PluginError, registry

    scores: list[tuple[int, str]] = []
    tail: bytes | None = None
    tail_read = False                   # read for the first trailer's magic (a longer
    for name in registry().names("block"):       # one of another format: asked)
        try:
            magics = registry().probe_magics(name)
            if not tail_read and magics and min(m[0] for m in magics) < 0:
                tail = read_tail(path, max(-m[0] for m in magics))
                tail_read = True
            if not may_claim(header, magics, tail):
                continue                # its probe would answer 0: not imported
            probe = registry().probe_function(name)
        except PluginError as exc:  # a broken plugin must not stop probing
            log.warning("skipping format %s while probing: %s", name, exc)
            continue
        try:
            score = int(probe(header, path))
        except Exception as exc:  # a driver's probe must not fail on odd bytes; say so
            log.warning("format %s: probe raised %s: %s", name, type(exc).__name__, exc)
            continue
        if score > 0:
            scores.append((score, name))
    if not scores:
        raise BlockError("could not determine the image format (installed formats: "
                         f"{', '.join(format_names()) or 'none'}); pass it with -f", path)
    scores.sort(key=lambda s: (-s[0], s[1]))
    log.debug("probed %s: %s", path, scores)
    return scores[0][1]
