"""A small frame builder and parser: Ethernet, ARP, IPv4, ICMP, UDP, TCP, DHCP.

Enough to play a guest's network stack in tests and tools without a guest::

    frame = ether(BROADCAST, mac, ETH_IP,
                  ipv4("0.0.0.0", "255.255.255.255", IP_UDP,
                       udp("0.0.0.0", "255.255.255.255", 68, 67, dhcp(mac, xid, DISCOVER))))
    pkt = parse(reply)              # Packet: .eth_type, .ip_src, .sport, .payload, .dhcp ...

Only what vmforge's tests need: no IP options, fragments or IPv6 payloads.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = [
    "BROADCAST", "ETH_ARP", "ETH_IP", "IP_ICMP", "IP_TCP", "IP_UDP", "Packet", "arp",
    "checksum", "dhcp", "ether", "icmp_echo", "ipv4", "parse", "tcp", "udp",
]

BROADCAST = b"\xff" * 6
ETH_IP, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
IP_ICMP, IP_TCP, IP_UDP = 1, 6, 17
ARP_REQUEST, ARP_REPLY = 1, 2
ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# DHCP message types (option 53)
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
DHCP_MAGIC = b"\x63\x82\x53\x63"


def _ip(addr: str | bytes) -> bytes:
    return addr if isinstance(addr, bytes) else ipaddress.IPv4Address(addr).packed


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ether(dst: bytes, src: bytes, eth_type: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", eth_type) + payload


def arp(op: int, sender_mac: bytes, sender_ip: str, target_mac: bytes, target_ip: str) -> bytes:
    """An ARP packet for Ethernet/IPv4 (``op``: ARP_REQUEST or ARP_REPLY)."""
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, sender_mac, _ip(sender_ip),
                       target_mac, _ip(target_ip))


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64,
         ident: int = 0) -> bytes:
    """An IPv4 packet (no options, don't-fragment clear) with its header checksum."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                       _ip(src), _ip(dst))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return _ip(src) + _ip(dst) + struct.pack("!BBH", 0, proto, length)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum (``src``/``dst``: the IP addresses)."""
    head = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    csum = checksum(_pseudo(src, dst, IP_UDP, 8 + len(payload)) + head + payload) or 0xFFFF
    return head[:6] + struct.pack("!H", csum) + payload


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"", *, window: int = 65535, mss: int | None = None) -> bytes:
    """A TCP segment with its checksum; ``mss`` adds the MSS option."""
    options = b"" if mss is None else struct.pack("!BBH", 2, 4, mss)
    offset = (20 + len(options)) // 4
    head = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       offset << 4, flags, window, 0, 0) + options
    csum = checksum(_pseudo(src, dst, IP_TCP, len(head) + len(payload)) + head + payload)
    return head[:16] + struct.pack("!H", csum) + head[18:] + payload


def icmp_echo(ident: int, seq: int, payload: bytes = b"", *, reply: bool = False) -> bytes:
    head = struct.pack("!BBHHH", ICMP_ECHO_REPLY if reply else ICMP_ECHO, 0, 0, ident, seq)
    csum = checksum(head + payload)
    return head[:2] + struct.pack("!H", csum) + head[4:] + payload


def dhcp(mac: bytes, xid: int, msg_type: int, *, requested: str | None = None,
         server: str | None = None) -> bytes:
    """A BOOTP/DHCP client message (DISCOVER, REQUEST) from ``mac``."""
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                        bytes(4), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"),
                        bytes(64), bytes(128))
    options = bytes([53, 1, msg_type])
    if requested is not None:
        options += bytes([50, 4]) + _ip(requested)
    if server is not None:
        options += bytes([54, 4]) + _ip(server)
    options += bytes([55, 3, 1, 3, 6, 255])  # parameters: netmask, router, DNS; end
    return fixed + DHCP_MAGIC + options


@dataclass
class Packet:
    """What :func:`parse` found in a frame (fields of absent layers stay None)."""

    dst: bytes
    src: bytes
    eth_type: int
    arp_op: int | None = None
    arp_sender: tuple[bytes, str] | None = None  # (MAC, IP)
    arp_target: tuple[bytes, str] | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    proto: int | None = None
    ip_ok: bool = False  # the IPv4 header checksum holds
    sport: int | None = None
    dport: int | None = None
    seq: int | None = None
    ack: int | None = None
    flags: int | None = None
    icmp_type: int | None = None
    l4_ok: bool = False  # the UDP/TCP/ICMP checksum holds
    payload: bytes = b""
    dhcp: dict[int, bytes] = field(default_factory=dict)  # options, when DHCP
    yiaddr: str | None = None


def parse(frame: bytes) -> Packet:
    """Decode an Ethernet frame (ARP, or IPv4 with ICMP, UDP, TCP and DHCP)."""
    dst, src, eth_type = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    pkt = Packet(dst, src, eth_type)
    body = frame[14:]
    if eth_type == ETH_ARP and len(body) >= 28:
        _h, _p, _hl, _pl, op, smac, sip, tmac, tip = struct.unpack("!HHBBH6s4s6s4s", body[:28])
        pkt.arp_op = op
        pkt.arp_sender = (smac, str(ipaddress.IPv4Address(sip)))
        pkt.arp_target = (tmac, str(ipaddress.IPv4Address(tip)))
        return pkt
    if eth_type != ETH_IP or len(body) < 20:
        pkt.payload = body
        return pkt
    ihl = (body[0] & 0xF) * 4
    total = struct.unpack("!H", body[2:4])[0]
    pkt.proto = body[9]
    pkt.ip_src = str(ipaddress.IPv4Address(body[12:16]))
    pkt.ip_dst = str(ipaddress.IPv4Address(body[16:20]))
    pkt.ip_ok = checksum(body[:ihl]) == 0
    l4 = body[ihl:total]
    pseudo = _pseudo(pkt.ip_src, pkt.ip_dst, pkt.proto, len(l4))
    if pkt.proto == IP_UDP and len(l4) >= 8:
        pkt.sport, pkt.dport = struct.unpack("!HH", l4[:4])
        pkt.l4_ok = l4[6:8] == b"\0\0" or checksum(pseudo + l4) == 0
        pkt.payload = l4[8:]
        if pkt.sport == 67 and len(pkt.payload) >= 240 and pkt.payload[236:240] == DHCP_MAGIC:
            pkt.yiaddr = str(ipaddress.IPv4Address(pkt.payload[16:20]))
            pkt.dhcp = _dhcp_options(pkt.payload[240:])
    elif pkt.proto == IP_TCP and len(l4) >= 20:
        pkt.sport, pkt.dport, pkt.seq, pkt.ack, off, pkt.flags = struct.unpack(
            "!HHIIBB", l4[:14])
        pkt.l4_ok = checksum(pseudo + l4) == 0
        pkt.payload = l4[(off >> 4) * 4:]
    elif pkt.proto == IP_ICMP and len(l4) >= 8:
        pkt.icmp_type = l4[0]
        pkt.l4_ok = checksum(l4) == 0
        pkt.payload = l4[8:]
    else:
        pkt.payload = l4
    return pkt


def _dhcp_options(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        size = data[i + 1]
        out[code] = data[i + 2:i + 2 + size]
        i += 2 + size
    return out
