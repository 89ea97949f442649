"""ctypes bindings of libslirp (``include/slirp/libslirp.h``, config version 4).

Only what :mod:`vmforge_slirp.user` uses: ``slirp_new`` with a
:class:`SlirpConfig` and :class:`SlirpCb`, ``slirp_input``, the poll pair
``slirp_pollfds_fill``/``slirp_pollfds_poll``, timers through
``slirp_handle_timer``, host forwarding and ``slirp_cleanup``.  Config
version 4 is what libslirp 4.1 and later read; newer libraries accept it.

The structures mirror the C layout: ``struct in_addr`` and ``struct in6_addr``
are 4-byte aligned (the latter is a union with ``uint32_t[4]``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_ssize_t,
    c_uint8,
    c_uint32,
    c_void_p,
)
from typing import Any

from vmforge.net import NetdevError

__all__ = ["CONFIG_VERSION", "In6Addr", "InAddr", "SlirpCb", "SlirpConfig", "load"]

CONFIG_VERSION = 4

SLIRP_POLL_IN, SLIRP_POLL_OUT, SLIRP_POLL_PRI = 1, 2, 4
SLIRP_POLL_ERR, SLIRP_POLL_HUP = 8, 16


class InAddr(Structure):
    """``struct in_addr``: the address in network byte order."""

    _fields_ = [("s_addr", c_uint32)]

    @classmethod
    def of(cls, addr: str | ipaddress.IPv4Address) -> InAddr:
        return cls(int.from_bytes(ipaddress.IPv4Address(addr).packed, sys.byteorder))


class In6Addr(Structure):
    """``struct in6_addr`` (4-byte aligned, as its ``uint32_t`` union member makes it)."""

    _fields_ = [("s6_addr32", c_uint32 * 4)]

    @classmethod
    def of(cls, addr: str | ipaddress.IPv6Address) -> In6Addr:
        out = cls()
        ctypes.memmove(ctypes.byref(out), ipaddress.IPv6Address(addr).packed, 16)
        return out


class SlirpConfig(Structure):
    _fields_ = [
        ("version", c_uint32),
        # version 1
        ("restricted", c_int),
        ("in_enabled", c_bool),
        ("vnetwork", InAddr),
        ("vnetmask", InAddr),
        ("vhost", InAddr),
        ("in6_enabled", c_bool),
        ("vprefix_addr6", In6Addr),
        ("vprefix_len", c_uint8),
        ("vhost6", In6Addr),
        ("vhostname", c_char_p),
        ("tftp_server_name", c_char_p),
        ("tftp_path", c_char_p),
        ("bootfile", c_char_p),
        ("vdhcp_start", InAddr),
        ("vnameserver", InAddr),
        ("vnameserver6", In6Addr),
        ("vdnssearch", POINTER(c_char_p)),
        ("vdomainname", c_char_p),
        ("if_mtu", c_size_t),
        ("if_mru", c_size_t),
        ("disable_host_loopback", c_bool),
        ("enable_emu", c_bool),
        # version 2
        ("outbound_addr", c_void_p),
        ("outbound_addr6", c_void_p),
        # version 3
        ("disable_dns", c_bool),
        # version 4
        ("disable_dhcp", c_bool),
    ]


SendPacket = CFUNCTYPE(c_ssize_t, c_void_p, c_size_t, c_void_p)
GuestError = CFUNCTYPE(None, c_char_p, c_void_p)
ClockGetNs = CFUNCTYPE(c_int64, c_void_p)
TimerCb = CFUNCTYPE(None, c_void_p)
TimerNew = CFUNCTYPE(c_void_p, TimerCb, c_void_p, c_void_p)
TimerFree = CFUNCTYPE(None, c_void_p, c_void_p)
TimerMod = CFUNCTYPE(None, c_void_p, c_int64, c_void_p)
PollFd = CFUNCTYPE(None, c_int, c_void_p)
Notify = CFUNCTYPE(None, c_void_p)
InitCompleted = CFUNCTYPE(None, c_void_p, c_void_p)
TimerNewOpaque = CFUNCTYPE(c_void_p, c_int, c_void_p, c_void_p)
AddPoll = CFUNCTYPE(c_int, c_int, c_int, c_void_p)
GetREvents = CFUNCTYPE(c_int, c_int, c_void_p)


class SlirpCb(Structure):
    _fields_ = [
        ("send_packet", SendPacket),
        ("guest_error", GuestError),
        ("clock_get_ns", ClockGetNs),
        ("timer_new", TimerNew),
        ("timer_free", TimerFree),
        ("timer_mod", TimerMod),
        ("register_poll_fd", PollFd),
        ("unregister_poll_fd", PollFd),
        ("notify", Notify),
        ("init_completed", InitCompleted),
        ("timer_new_opaque", TimerNewOpaque),
    ]


_lib: Any = None


def load() -> Any:
    """The loaded library with its functions typed (NetdevError when it is missing)."""
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("slirp"), "libslirp.so.0") if n]
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise NetdevError("-netdev user: libslirp is not installed (Debian package libslirp0): "
                          + "; ".join(errors))
    lib.slirp_new.restype = c_void_p
    lib.slirp_new.argtypes = [POINTER(SlirpConfig), POINTER(SlirpCb), c_void_p]
    lib.slirp_cleanup.restype = None
    lib.slirp_cleanup.argtypes = [c_void_p]
    lib.slirp_input.restype = None
    lib.slirp_input.argtypes = [c_void_p, c_char_p, c_int]
    lib.slirp_pollfds_fill.restype = None
    lib.slirp_pollfds_fill.argtypes = [c_void_p, POINTER(c_uint32), AddPoll, c_void_p]
    lib.slirp_pollfds_poll.restype = None
    lib.slirp_pollfds_poll.argtypes = [c_void_p, c_int, GetREvents, c_void_p]
    lib.slirp_handle_timer.restype = None
    lib.slirp_handle_timer.argtypes = [c_void_p, c_int, c_void_p]
    lib.slirp_add_hostfwd.restype = c_int
    lib.slirp_add_hostfwd.argtypes = [c_void_p, c_int, InAddr, c_int, InAddr, c_int]
    lib.slirp_version_string.restype = c_char_p
    lib.slirp_version_string.argtypes = []
    _lib = lib
    return lib


def version() -> str:
    """libslirp's version string."""
    return str(load().slirp_version_string().decode())
