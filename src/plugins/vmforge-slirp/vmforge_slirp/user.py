"""``-netdev user``: user-mode networking with libslirp (QEMU's net/slirp.c).

The guest sees QEMU's usual network: a gateway (the host alias) at 10.0.2.2
that reaches the host's loopback, DHCP handing out 10.0.2.15 onwards, a DNS
forwarder at 10.0.2.3, and IPv6 ``fec0::/64``.  Options, as QEMU spells them::

    -netdev user,id=n0[,restrict=on|off][,ipv4=on|off][,ipv6=on|off]
            [,net=10.0.2.0/24][,host=10.0.2.2][,dhcpstart=10.0.2.15][,dns=10.0.2.3]
            [,ipv6-net=fec0::/64][,ipv6-host=fec0::2][,ipv6-dns=fec0::3]
            [,hostname=NAME][,domainname=DOMAIN][,dnssearch=DOMAIN]
            [,tftp=DIR][,tftp-server-name=NAME][,bootfile=FILE]
            [,hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT]

``restrict=on`` isolates the guest: it reaches neither the host nor anything
beyond, only what ``hostfwd`` rules bring in.  ``hostfwd`` may be given as a
list of rules (``options={"hostfwd": [...]}``) for several forwardings.

libslirp is not thread-safe: one I/O thread owns the instance.  It feeds
guest frames to ``slirp_input``, polls the descriptors libslirp asks for
(``slirp_pollfds_fill``/``_poll``), fires its timers and receives frames for
the guest in ``send_packet``, queued for the NIC (dropped when the NIC's queue
is full: libslirp's TCP retransmits, as its header says to do).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from vmforge.net import NetBackend, NetdevError
from vmforge.net.backend import Frame
from vmforge_slirp import libslirp as ls

__all__ = ["SlirpNet", "parse_hostfwd"]

log = logging.getLogger("vmforge.net.slirp")

_POLL_BITS = ((ls.SLIRP_POLL_IN, select.POLLIN), (ls.SLIRP_POLL_OUT, select.POLLOUT),
              (ls.SLIRP_POLL_PRI, select.POLLPRI), (ls.SLIRP_POLL_ERR, select.POLLERR),
              (ls.SLIRP_POLL_HUP, select.POLLHUP))
#: longest sleep of the I/O thread when neither libslirp nor a timer asks for less (ms)
MAX_SLEEP_MS = 1000


def _onoff(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    low = value.lower()
    if low in ("on", "yes", "y", "true", "1"):
        return True
    if low in ("off", "no", "n", "false", "0"):
        return False
    raise NetdevError(f"-netdev user: {name}={value}: expected on or off")


def parse_hostfwd(rule: str) -> tuple[bool, str, int, str, int]:
    """``[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`` ->
    ``(is_udp, host address, host port, guest address, guest port)``; empty
    addresses are ``""`` (every host address, the first DHCP address)."""
    proto, sep, rest = rule.partition(":")
    if not sep or proto not in ("", "tcp", "udp"):
        raise NetdevError(f"hostfwd={rule}: expected [tcp|udp]:[hostaddr]:hostport-"
                          "[guestaddr]:guestport")
    host, dash, guest = rest.partition("-")
    try:
        if not dash:
            raise ValueError("no '-'")
        haddr, _, hport = host.rpartition(":")
        gaddr, _, gport = guest.rpartition(":")
        if haddr:
            ipaddress.IPv4Address(haddr)
        if gaddr:
            ipaddress.IPv4Address(gaddr)
        hp, gp = int(hport), int(gport)
        if not (0 <= hp <= 65535 and 1 <= gp <= 65535):
            raise ValueError("port out of range")
    except ValueError as exc:
        raise NetdevError(f"hostfwd={rule}: invalid forwarding rule ({exc})") from exc
    return proto == "udp", haddr, hp, gaddr, gp


class SlirpNet(NetBackend):
    """User-mode networking: the guest's packets become host sockets."""

    type: ClassVar[str] = "user"
    options: ClassVar[tuple[str, ...]] = (
        "restrict", "ipv4", "ipv6", "net", "host", "dhcpstart", "dns", "ipv6-net",
        "ipv6-host", "ipv6-dns", "hostname", "domainname", "dnssearch", "tftp",
        "tftp-server-name", "bootfile", "hostfwd")

    def __init__(self, id: str = "", *, restrict: str | bool = False, ipv4: str | bool = True,
                 ipv6: str | bool = True, net: str = "10.0.2.0/24", host: str = "",
                 dhcpstart: str = "", dns: str = "", ipv6_net: str = "fec0::/64",
                 ipv6_host: str = "", ipv6_dns: str = "", hostname: str = "",
                 domainname: str = "", dnssearch: str = "", tftp: str = "",
                 tftp_server_name: str = "", bootfile: str = "",
                 hostfwd: str | Sequence[str] = (),
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().__init__(id, dispatch=dispatch)
        self._lib = ls.load()
        self.restricted = _onoff("restrict", restrict)
        rules = [hostfwd] if isinstance(hostfwd, str) else list(hostfwd)
        self.hostfwd = [parse_hostfwd(r) for r in rules if r]
        self._keep: list[Any] = []  # C strings and callbacks libslirp points at
        self._cfg = self._config(_onoff("ipv4", ipv4), _onoff("ipv6", ipv6), net, host,
                                 dhcpstart, dns, ipv6_net, ipv6_host, ipv6_dns, hostname,
                                 domainname, dnssearch, tftp, tftp_server_name, bootfile)
        self._input: deque[bytes] = deque()
        self._input_bytes = 0
        self._input_lock = threading.Lock()
        self._timers: dict[int, list[Any]] = {}  # handle -> [id, cb_opaque, expire_ms|None]
        self._next_timer = 1
        self._pollfds: list[tuple[int, int]] = []
        self._revents: dict[int, int] = {}
        self._slirp: int | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._cb = self._callbacks()
        self._add_poll = ls.AddPoll(self._on_add_poll)
        self._get_revents = ls.GetREvents(self._on_get_revents)
        slirp = self._lib.slirp_new(ctypes.byref(self._cfg), ctypes.byref(self._cb), None)
        if not slirp:
            self._close_pipe()
            raise NetdevError(f"-netdev user,id={self.id}: libslirp refused the configuration")
        self._slirp = slirp
        try:
            for is_udp, haddr, hport, gaddr, gport in self.hostfwd:
                ok = self._lib.slirp_add_hostfwd(
                    slirp, int(is_udp), ls.InAddr.of(haddr or "0.0.0.0"), hport,
                    ls.InAddr.of(gaddr or "0.0.0.0"), gport)
                if ok < 0:
                    where = f"{haddr or '*'}:{hport}"
                    raise NetdevError(f"-netdev user,id={self.id}: could not set up host "
                                      f"forwarding rule {'udp' if is_udp else 'tcp'} {where} "
                                      f"(the port may be in use)")
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._loop, name=f"netdev-{self.id}",
                                        daemon=True)
        self._thread.start()

    # -- configuration ------------------------------------------------------------------

    def _cstr(self, text: str) -> bytes | None:
        if not text:
            return None
        raw = text.encode()
        self._keep.append(raw)
        return raw

    def _config(self, ipv4: bool, ipv6: bool, net: str, host: str, dhcpstart: str, dns: str,
                ipv6_net: str, ipv6_host: str, ipv6_dns: str, hostname: str, domainname: str,
                dnssearch: str, tftp: str, tftp_server_name: str, bootfile: str
                ) -> ls.SlirpConfig:
        try:
            network = ipaddress.IPv4Network(net if "/" in net else f"{net}/24", strict=False)
            addrs = list(network.hosts())
            if len(addrs) < 16:
                raise ValueError("the network is too small")
            vhost = ipaddress.IPv4Address(host) if host else network.network_address + 2
            start = ipaddress.IPv4Address(dhcpstart) if dhcpstart else network.network_address + 15
            vdns = ipaddress.IPv4Address(dns) if dns else network.network_address + 3
            for what, addr in (("host", vhost), ("dhcpstart", start), ("dns", vdns)):
                if addr not in network:
                    raise ValueError(f"{what}={addr} is not in {network}")
            net6 = ipaddress.IPv6Network(ipv6_net, strict=False)
            host6 = ipaddress.IPv6Address(ipv6_host) if ipv6_host else net6.network_address + 2
            dns6 = ipaddress.IPv6Address(ipv6_dns) if ipv6_dns else net6.network_address + 3
        except ValueError as exc:
            raise NetdevError(f"-netdev user,id={self.id}: {exc}") from exc
        if not (ipv4 or ipv6):
            raise NetdevError(f"-netdev user,id={self.id}: ipv4=off and ipv6=off leave nothing")
        self.network, self.host_alias, self.dhcp_start, self.dns = network, vhost, start, vdns
        cfg = ls.SlirpConfig()
        cfg.version = ls.CONFIG_VERSION
        cfg.restricted = int(self.restricted)
        cfg.in_enabled = ipv4
        cfg.vnetwork = ls.InAddr.of(network.network_address)
        cfg.vnetmask = ls.InAddr.of(network.netmask)
        cfg.vhost = ls.InAddr.of(vhost)
        cfg.in6_enabled = ipv6
        cfg.vprefix_addr6 = ls.In6Addr.of(net6.network_address)
        cfg.vprefix_len = net6.prefixlen
        cfg.vhost6 = ls.In6Addr.of(host6)
        cfg.vhostname = self._cstr(hostname)
        cfg.tftp_server_name = self._cstr(tftp_server_name)
        cfg.tftp_path = self._cstr(tftp)
        cfg.bootfile = self._cstr(bootfile)
        cfg.vdhcp_start = ls.InAddr.of(start)
        cfg.vnameserver = ls.InAddr.of(vdns)
        cfg.vnameserver6 = ls.In6Addr.of(dns6)
        if dnssearch:
            search = (ctypes.c_char_p * 2)(self._cstr(dnssearch), None)
            self._keep.append(search)
            cfg.vdnssearch = ctypes.cast(search, ctypes.POINTER(ctypes.c_char_p))
        cfg.vdomainname = self._cstr(domainname)
        cfg.if_mtu = 0  # libslirp's defaults (1500)
        cfg.if_mru = 0
        return cfg

    def _callbacks(self) -> ls.SlirpCb:
        cb = ls.SlirpCb()
        cb.send_packet = ls.SendPacket(self._on_send_packet)
        cb.guest_error = ls.GuestError(self._on_guest_error)
        cb.clock_get_ns = ls.ClockGetNs(lambda _opaque: time.monotonic_ns())
        cb.timer_new = ls.TimerNew(self._on_timer_new)
        cb.timer_free = ls.TimerFree(self._on_timer_free)
        cb.timer_mod = ls.TimerMod(self._on_timer_mod)
        cb.register_poll_fd = ls.PollFd(lambda _fd, _opaque: None)
        cb.unregister_poll_fd = ls.PollFd(lambda _fd, _opaque: None)
        cb.notify = ls.Notify(lambda _opaque: self._wake())
        cb.init_completed = ls.InitCompleted(self._on_init_completed)
        cb.timer_new_opaque = ls.TimerNewOpaque(self._on_timer_new_opaque)
        return cb

    # -- callbacks from libslirp (its thread) -------------------------------------------------

    def _on_send_packet(self, buf: int, length: int, _opaque: int) -> int:
        self._arrived(ctypes.string_at(buf, length), drop_when_full=True)
        return length

    def _on_guest_error(self, msg: bytes, _opaque: int) -> None:
        log.warning("netdev %s: guest error: %s", self.id, msg.decode(errors="replace"))

    def _on_init_completed(self, slirp: int, _opaque: int) -> None:
        self._slirp = slirp  # timers may be created before slirp_new returns

    def _new_timer(self, entry: list[Any]) -> int:
        handle = self._next_timer
        self._next_timer += 1
        self._timers[handle] = entry
        return handle

    def _on_timer_new_opaque(self, timer_id: int, cb_opaque: int, _opaque: int) -> int:
        return self._new_timer([timer_id, cb_opaque, None, None])

    def _on_timer_new(self, cb: Any, cb_opaque: int, _opaque: int) -> int:
        return self._new_timer([None, cb_opaque, None, cb])

    def _on_timer_free(self, handle: int, _opaque: int) -> None:
        self._timers.pop(handle, None)

    def _on_timer_mod(self, handle: int, expire_ms: int, _opaque: int) -> None:
        entry = self._timers.get(handle)
        if entry is not None:
            entry[2] = expire_ms

    def _on_add_poll(self, fd: int, events: int, _opaque: int) -> int:
        self._pollfds.append((fd, events))
        return len(self._pollfds) - 1

    def _on_get_revents(self, idx: int, _opaque: int) -> int:
        if not 0 <= idx < len(self._pollfds):
            return 0
        revents = self._revents.get(self._pollfds[idx][0], 0)
        return sum(sbit for sbit, pbit in _POLL_BITS if revents & pbit)

    # -- guest -> libslirp --------------------------------------------------------------------

    def _send(self, frame: Frame, length: int) -> bool:
        data = b"".join(bytes(part) for part in frame)
        with self._input_lock:
            self._input.append(data)
            self._input_bytes += len(data)
        self._wake()
        return True

    def _tx_pending(self) -> int:
        return self._input_bytes

    def _rx_resumed(self) -> None:
        pass  # frames for the guest are dropped when the queue is full, never held

    # -- the I/O thread ---------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _loop(self) -> None:
        try:
            while not self.closed:
                self._turn()
        except Exception:
            log.exception("netdev %s: slirp thread failed", self.id)

    def _turn(self) -> None:
        lib, slirp = self._lib, self._slirp
        fed = False
        while True:
            with self._input_lock:
                if not self._input:
                    break
                data = self._input.popleft()
                self._input_bytes -= len(data)
            lib.slirp_input(slirp, data, len(data))
            fed = True
        if fed:
            self._tx_drained()
        self._pollfds = []
        timeout = ctypes.c_uint32(MAX_SLEEP_MS)
        lib.slirp_pollfds_fill(slirp, ctypes.byref(timeout), self._add_poll, None)
        wait = min(int(timeout.value), MAX_SLEEP_MS, self._timer_wait())
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        masks: dict[int, int] = {}
        for fd, events in self._pollfds:
            masks[fd] = masks.get(fd, 0) | sum(p for s, p in _POLL_BITS if events & s)
        for fd, mask in masks.items():
            poller.register(fd, mask)
        error = 0
        try:
            ready = poller.poll(wait)
        except OSError:
            ready, error = [], 1
        self._revents = dict(ready)
        if self._wake_r in self._revents:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        if self.closed:
            return
        lib.slirp_pollfds_poll(slirp, error, self._get_revents, None)
        self._fire_timers()

    def _timer_wait(self) -> int:
        now = time.monotonic_ns() // 1_000_000
        due = [e[2] for e in self._timers.values() if e[2] is not None]
        return max(0, min(due) - now) if due else MAX_SLEEP_MS

    def _fire_timers(self) -> None:
        now = time.monotonic_ns() // 1_000_000
        for entry in list(self._timers.values()):
            if entry[2] is not None and entry[2] <= now:
                entry[2] = None
                if entry[3] is not None:
                    entry[3](entry[1])
                else:
                    self._lib.slirp_handle_timer(self._slirp, entry[0], entry[1])

    # -- life cycle ---------------------------------------------------------------------------

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._wake()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
            if thread.is_alive():
                log.warning("netdev %s: slirp thread did not stop; instance leaked", self.id)
                return
        if self._slirp is not None:
            self._lib.slirp_cleanup(self._slirp)
            self._slirp = None
        self._close_pipe()
