"""The registry's scan of installed distributions, kept between commands (start-up time).

:class:`vmforge.plugins.Registry` reads every distribution's ``entry_points.txt``
on its path (~2 ms of a command's start-up with a few dozen distributions).  What it
keeps of them, the distributions with a ``vmforge.*`` entry point as :data:`Scan`
records, is stored in ``${VMFORGE_CACHE:-~/.cache/vmforge}/plugins/`` (the cache
:func:`vmforge.cachedir.cache_root` names), one file per search path, and used while
nothing it was read from changed:

- each folder of the path has the modification time it had (a distribution
  installed, upgraded or removed adds or removes a ``*.dist-info`` folder there,
  which changes its folder's time); a path entry that is a file (a zip archive)
  is not cached;
- each ``entry_points.txt`` the records come from has the time and size it had (an
  editable install rewritten in place).

A folder changed less than :data:`SETTLE_NS` before the scan is not trusted to the
clock's granularity: the scan is not stored (the next command scans again).  Any
failure to read or write the cache only means scanning as without it.  What is not
seen: a distribution without vmforge entry points whose ``entry_points.txt`` is
rewritten in place to declare some (``setup.py egg_info`` in a develop checkout; pip
always makes a new folder) until a folder of the path changes; ``vmforge plugins``
always reads the metadata afresh and stores what it read.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

from vmforge.cachedir import cache_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeAlias

    #: a distribution with vmforge entry points: its name, version, the
    #: ``entry_points.txt`` they were read from (None: not a folder's), and its
    #: ``(group, name, value)`` entry points of the ``vmforge.*`` groups
    Record: TypeAlias = tuple[str, str, str | None, list[tuple[str, str, str]]]
    Scan: TypeAlias = list[Record]

__all__ = ["FORMAT", "MAX_FILES", "SETTLE_NS", "cache_file", "folder_times", "load", "store"]

#: the layout of a cache file (a file of another layout is ignored)
FORMAT = 1
#: a folder modified this recently is not trusted to have its final time
SETTLE_NS = 2_000_000_000
#: cache files kept (one per search path): past this many the oldest go
MAX_FILES = 64


def _folder() -> str:
    return os.path.join(cache_root(), "plugins")


def cache_file(path: Sequence[str]) -> str:
    """The file that holds the scan of ``path`` (FNV-1a of the path and the interpreter)."""
    h = 0xCBF29CE484222325
    for byte in "\0".join([sys.implementation.cache_tag or "", *path]).encode(
            "utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(_folder(), f"{h:016x}.marshal")


def folder_times(path: Sequence[str]) -> list[int] | None:
    """Each path entry's modification time (-1: missing), or None: one is not a folder
    (``path`` is not cached).  :func:`store` needs them as they were before the scan."""
    out = []
    for entry in path:
        try:
            st = os.stat(entry or ".")
        except OSError:
            out.append(-1)
            continue
        if st.st_mode & 0o170000 != 0o040000:
            return None
        out.append(st.st_mtime_ns)
    return out


def _file_stamp(name: str) -> tuple[int, int]:
    try:
        st = os.stat(name)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def load(path: Sequence[str]) -> Scan | None:
    """The stored scan of ``path``, or None: none, or something changed since."""
    try:
        fd = os.open(cache_file(path), os.O_RDONLY)   # no file object: start-up time
        try:
            data = os.read(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        fmt, stored_path, times, files, scan = marshal.loads(data)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if fmt != FORMAT or stored_path != list(path) or folder_times(path) != times:
        return None
    try:
        for name, stamp in files:
            if _file_stamp(name) != stamp:
                return None
        if not _well_formed(scan):
            return None
    except (TypeError, ValueError):     # not what store() writes
        return None
    return scan  # type: ignore[no-any-return]


def _well_formed(scan: object) -> bool:
    """Whether ``scan`` is a :data:`Scan` (a damaged file may unmarshal to anything)."""
    if type(scan) is not list:
        return False
    for record in scan:
        if (type(record) is not tuple or len(record) != 4 or type(record[0]) is not str
                or type(record[1]) is not str or type(record[3]) is not list):
            return False
        for ep in record[3]:
            if (type(ep) is not tuple or len(ep) != 3 or type(ep[0]) is not str
                    or type(ep[1]) is not str or type(ep[2]) is not str):
                return False
    return True


def store(path: Sequence[str], scan: Scan, times: list[int] | None) -> None:
    """Keep ``scan``, made from ``path`` whose folders had the modification ``times``
    (:func:`folder_times` before the scan), unless one changed since or just before it."""
    if times is None:
        return
    settled = time.time_ns() - SETTLE_NS
    if any(t > settled for t in times) or folder_times(path) != times:
        return
    files = [(name, _file_stamp(name)) for _, _, name, _ in scan if name is not None]
    if any(stamp[0] > settled for _, stamp in files):
        return
    target = cache_file(path)
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((FORMAT, list(path), times, files, scan)))
        os.replace(tmp, target)
        _prune(os.path.dirname(target))
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _prune(folder: str) -> None:
    """At most :data:`MAX_FILES` cache files: the least recently written go."""
    with os.scandir(folder) as it:
        found = [(e.stat().st_mtime_ns, e.path) for e in it if e.name.endswith(".marshal")]
    if len(found) > MAX_FILES:
        found.sort()
        for _, name in found[:len(found) - MAX_FILES]:
            os.unlink(name)
