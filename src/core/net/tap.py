"""``-netdev tap``: a Linux TAP interface (QEMU's net/tap-linux.c).

``-netdev tap,id=n0,ifname=tap0,script=no,downscript=no`` opens ``/dev/net/tun``
and attaches to (or creates) the interface with ``IFF_TAP | IFF_NO_PI``: every
read is one Ethernet frame from the host, every write one frame from the guest,
without the packet-information prefix and without a virtio-net header.  A name
with ``%d`` lets the kernel choose the number; :attr:`TapNet.ifname` says which.

``script=PATH`` runs ``PATH IFNAME`` once the interface exists (QEMU's default
``/etc/qemu-ifup`` is used only when present; ``script=no`` runs nothing) and
``downscript=PATH`` at close.  ``fd=N`` takes a tap descriptor opened by
someone else (libvirt's way).  Creating an interface needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import subprocess
from collections.abc import Callable
from typing import ClassVar

from vmforge.net.backend import MAX_FRAME, Frame, NetdevError
from vmforge.net.fdnet import FdNet

__all__ = ["TapNet", "open_tap"]

log = logging.getLogger("vmforge.net")

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
DEFAULT_SCRIPT = "/etc/qemu-ifup"
DEFAULT_DOWNSCRIPT = "/etc/qemu-ifdown"
#: frames read per wake-up before the I/O thread looks at its other work
READ_BURST = 64


def open_tap(ifname: str = "") -> tuple[int, str]:
    """Open ``/dev/net/tun`` as the TAP interface ``ifname`` (created if needed; empty or
    with ``%d``: the kernel numbers it): ``(fd, the interface's name)``."""
    if len(ifname.encode()) >= IFNAMSIZ:
        raise NetdevError(f"tap: ifname={ifname}: longer than {IFNAMSIZ - 1} bytes")
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise NetdevError(f"tap: could not open {TUN_DEVICE}: {exc.strerror}") from exc
    ifr = struct.pack(f"{IFNAMSIZ}sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI)
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        hint = " (creating a tap interface needs CAP_NET_ADMIN)" if exc.errno == errno.EPERM \
            else ""
        raise NetdevError(f"tap: could not configure {TUN_DEVICE} ({ifname or 'tap%d'}): "
                          f"{exc.strerror}{hint}") from exc
    name = ifr[:IFNAMSIZ].split(b"\0", 1)[0].decode()
    return fd, name


def _run_script(script: str, ifname: str, what: str) -> None:
    try:
        done = subprocess.run([script, ifname], check=False, stdin=subprocess.DEVNULL,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetdevError(f"tap: could not launch network {what} {script}: {exc}") from exc
    if done.returncode != 0:
        raise NetdevError(f"tap: network {what} {script} failed with status "
                          f"{done.returncode}")


class TapNet(FdNet):
    """A TAP interface back-end."""

    type: ClassVar[str] = "tap"
    options: ClassVar[tuple[str, ...]] = ("ifname", "fd", "script", "downscript")

    def __init__(self, id: str = "", *, ifname: str = "", fd: int | str | None = None,
                 script: str | None = None, downscript: str | None = None,
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().__init__(id, dispatch=dispatch)
        self.fd: int | None = None
        self.ifname = ifname
        self.downscript = ""
        self._failed = False
        try:
            if fd is not None and fd != "":
                if ifname or script not in (None, "", "no"):
                    raise NetdevError(f"-netdev tap,id={self.id}: fd= excludes ifname= and "
                                      "script=")
                self.fd = int(fd)
                os.set_blocking(self.fd, False)
                self.ifname = ifname
            else:
                self.fd, self.ifname = open_tap(ifname)
                up = self._script(script, DEFAULT_SCRIPT)
                if up:
                    _run_script(up, self.ifname, "script")
                self.downscript = self._script(downscript, DEFAULT_DOWNSCRIPT)
        except ValueError as exc:
            self.close()
            if isinstance(exc, NetdevError):
                raise
            raise NetdevError(f"-netdev tap,id={self.id}: fd={fd}: not a number") from exc
        except BaseException:
            self.close()
            raise
        self.start()

    @staticmethod
    def _script(value: str | None, default: str) -> str:
        if value is None:
            return default if os.access(default, os.X_OK) else ""
        return "" if value in ("", "no") else value

    # -- FdNet hooks -----------------------------------------------------------------------

    def _io_fd(self) -> int | None:
        return None if self._failed else self.fd

    def _write_now(self, parts: Frame) -> int:
        if self.fd is None:
            raise BlockingIOError
        return os.writev(self.fd, parts)

    def _read_ready(self) -> None:
        for _ in range(READ_BURST):
            if self.fd is None or not self.rx_room():
                return
            try:
                frame = os.read(self.fd, MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the interface went away: stop polling it
                log.warning("netdev %s: read: %s; the tap is no longer read", self.id,
                            exc.strerror)
                self._failed = True
                return
            if frame:
                self._arrived(frame)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        with self._wlock:
            fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.downscript:
            try:
                _run_script(self.downscript, self.ifname, "downscript")
            except NetdevError as exc:
                log.warning("%s", exc)
