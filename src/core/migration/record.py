"""The checks of a saved record, shared by every device's ``load_state``.

A record is a dict of plain values (ints, bools, bytes, strings, lists, dicts)
with a ``name`` and a ``version``.  Loading checks the whole record first and
raises :class:`StateError` naming the device and the field; only then does it
change the device (QEMU's ``VMStateDescription`` checks, Firecracker's
``persist.rs``): a bad record is refused, never half-applied.
"""

from __future__ import annotations

from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["StateError", "check_header", "get_bool", "get_bytes", "get_int", "get_ints",
           "header"]

U64 = (1 << 64) - 1


class StateError(VmforgeError, ValueError):
    """A saved record does not fit what it is loaded into (nothing was applied)."""


def header(name: str, version: int) -> dict[str, Any]:
    """The start of a record: ``{"name": name, "version": version}``."""
    return {"name": name, "version": version}


def check_header(record: Any, name: str, version: int) -> dict[str, Any]:
    """``record`` as a dict, if it is a record of ``name`` at ``version``."""
    if not isinstance(record, dict):
        raise StateError(f"{name} state: not a record ({type(record).__name__})")
    if record.get("name") != name:
        raise StateError(f"{name} state: the record is for {record.get('name')!r}")
    if record.get("version") != version:
        raise StateError(f"{name} state: version {record.get('version')!r}, "
                         f"this {name} reads version {version}")
    return record


def get_int(record: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    """``record[key]``, an int in ``[lo, hi]``."""
    value = record.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise StateError(f"{where}: {key}={value!r} is not an integer in [{lo}, {hi}]")
    return value


def get_bool(record: dict[str, Any], key: str, where: str) -> bool:
    """``record[key]``, a bool."""
    value = record.get(key)
    if type(value) is not bool:
        raise StateError(f"{where}: {key}={value!r} is not a bool")
    return value


def get_ints(record: dict[str, Any], key: str, count: int, lo: int, hi: int,
             where: str) -> list[int]:
    """``record[key]``, a list of ``count`` ints in ``[lo, hi]``."""
    value = record.get(key)
    if not isinstance(value, list) or len(value) != count:
        raise StateError(f"{where}: {key} is not a list of {count} integers")
    for i, item in enumerate(value):
        if type(item) is not int or not lo <= item <= hi:
            raise StateError(f"{where}: {key}[{i}]={item!r} is not an integer in "
                             f"[{lo}, {hi}]")
    return value


def get_bytes(record: dict[str, Any], key: str, max_len: int, where: str) -> bytes:
    """``record[key]``, bytes of at most ``max_len``."""
    value = record.get(key)
    if type(value) is not bytes or len(value) > max_len:
        raise StateError(f"{where}: {key} is not bytes of at most {max_len}")
    return value
