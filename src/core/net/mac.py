"""MAC addresses: parsing, printing and QEMU's default ``52:54:00:12:34:56`` series.

A NIC without ``mac=`` gets :func:`default_mac`: ``52:54:00:12:34:56`` for the
first, ``...:57`` for the next, as QEMU numbers them; addresses NICs claim
explicitly are skipped, and :func:`release_mac` gives one back when a NIC goes.
"""

from __future__ import annotations

import re
import threading

from vmforge.net.backend import NetdevError

__all__ = ["claim_mac", "default_mac", "format_mac", "parse_mac", "release_mac"]

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}")
_DEFAULT_PREFIX = bytes.fromhex("525400123456")
_lock = threading.Lock()
_used: dict[bytes, int] = {}


def parse_mac(text: str) -> bytes:
    """``"52:54:00:12:34:56"`` (or with ``-``) -> 6 bytes; a multicast address is refused."""
    if not _MAC.fullmatch(text.strip()):
        raise NetdevError(f"mac={text}: not a MAC address (expected xx:xx:xx:xx:xx:xx)")
    mac = bytes.fromhex(re.sub("[:-]", "", text.strip()))
    if mac[0] & 1:
        raise NetdevError(f"mac={text}: a multicast address cannot be a NIC's address")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def claim_mac(mac: bytes) -> None:
    """Note that a NIC uses ``mac`` (the default series skips it)."""
    with _lock:
        _used[mac] = _used.get(mac, 0) + 1


def release_mac(mac: bytes) -> None:
    with _lock:
        count = _used.get(mac, 0) - 1
        if count > 0:
            _used[mac] = count
        else:
            _used.pop(mac, None)


def default_mac() -> bytes:
    """The first free address of ``52:54:00:12:34:56``, ``...:57``, ... (claimed)."""
    base = int.from_bytes(_DEFAULT_PREFIX, "big")
    with _lock:
        for index in range(256):
            mac = ((base & ~0xFF) | ((base + index) & 0xFF)).to_bytes(6, "big")
            if mac not in _used:
                _used[mac] = 1
                return mac
    raise NetdevError("no free default MAC address left (give mac=)")
