"""-netdev user through libslirp, the guest played with vmforge.net.packets: DHCP,
ARP, a TCP connection through the host alias to a server on 127.0.0.1, a hostfwd
from a 127.0.0.1 port to the guest, restrict=on refusing the host, options.

Every test keeps to loopback: restrict=on except where the guest must reach the
host alias (which is 127.0.0.1), and no DNS query is ever sent."""

from __future__ import annotations

import socket
import threading

import pytest

from vmforge.config import NetdevSpec
from vmforge.net import NetdevError, create_netdev, packets
from vmforge.net.packets import TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN
from vmforge.testing.virtio_driver import DeviceLoop
from vmforge_slirp import SlirpNet, parse_hostfwd

GUEST_MAC = bytes.fromhex("525400123499")
GUEST_IP, HOST_ALIAS = "10.0.2.15", "10.0.2.2"


class Guest:
    """The guest's end of a SlirpNet: answers ARP for its address, keeps the rest."""

    def __init__(self, spec: str, ip: str = GUEST_IP) -> None:
        self.loop = DeviceLoop()
        self.net = create_netdev(NetdevSpec.parse(spec), self.loop)
        assert isinstance(self.net, SlirpNet)
        self.ip = ip
        self.seen: list[packets.Packet] = []
        self.net.attach(self)

    def can_receive(self) -> bool:
        return True

    def receive(self, frame: bytes) -> bool:
        pkt = packets.parse(frame)
        if pkt.arp_op == packets.ARP_REQUEST and pkt.arp_target[1] == self.ip:
            mac, addr = pkt.arp_sender
            self.send(packets.ether(mac, GUEST_MAC, packets.ETH_ARP, packets.arp(
                packets.ARP_REPLY, GUEST_MAC, self.ip, mac, addr)))
        else:
            self.seen.append(pkt)
        return True

    def send_ready(self) -> None:
        pass

    def send(self, frame: bytes) -> None:
        assert self.net.send([frame])

    def wait(self, match, timeout: float = 5.0) -> packets.Packet:
        """The first packet ``match`` accepts (removed from ``seen``)."""
        found: list[packets.Packet] = []

        def look() -> bool:
            for pkt in self.seen:
                if match(pkt):
                    self.seen.remove(pkt)
                    found.append(pkt)
                    return True
            return False

        assert self.loop.run_until(look, timeout), f"not seen; got {self.seen}"
        return found[0]

    def gateway_mac(self) -> bytes:
        self.send(packets.ether(packets.BROADCAST, GUEST_MAC, packets.ETH_ARP, packets.arp(
            packets.ARP_REQUEST, GUEST_MAC, self.ip, bytes(6), HOST_ALIAS)))
        reply = self.wait(lambda p: p.arp_op == packets.ARP_REPLY)
        assert reply.arp_sender[1] == HOST_ALIAS and reply.dst == GUEST_MAC
        return reply.arp_sender[0]

    def tcp(self, gw: bytes, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
            payload: bytes = b"", mss: int | None = None) -> None:
        self.send(packets.ether(gw, GUEST_MAC, packets.ETH_IP, packets.ipv4(
            self.ip, dst, packets.IP_TCP, packets.tcp(self.ip, dst, sport, dport, seq, ack,
                                                      flags, payload, mss=mss))))

    def close(self) -> None:
        self.net.close()


@pytest.fixture
def guests():
    made: list[Guest] = []
    yield lambda *a, **k: made.append(Guest(*a, **k)) or made[-1]
    for g in made:
        g.close()


def dhcp_frame(msg: int, **kw) -> bytes:
    return packets.ether(packets.BROADCAST, GUEST_MAC, packets.ETH_IP, packets.ipv4(
        "0.0.0.0", "255.255.255.255", packets.IP_UDP, packets.udp(
            "0.0.0.0", "255.255.255.255", 68, 67, packets.dhcp(GUEST_MAC, 0xC0FFEE, msg, **kw))))


def is_dhcp(kind: int):
    return lambda p: p.dhcp.get(53) == bytes([kind])


@pytest.mark.parametrize("restrict", ["on", "off"])
def test_dhcp_discover_and_request(guests, restrict):
    """DHCP is answered inside libslirp; restricted, it names no router and no DNS."""
    g = guests(f"user,id=u0,restrict={restrict},ipv6=off")
    g.send(dhcp_frame(packets.DISCOVER))
    offer = g.wait(is_dhcp(packets.OFFER))
    assert offer.yiaddr == GUEST_IP and offer.ip_src == HOST_ALIAS and offer.ip_ok and offer.l4_ok
    assert offer.dhcp[54] == socket.inet_aton(HOST_ALIAS)      # server id
    assert offer.dhcp[1] == socket.inet_aton("255.255.255.0")
    if restrict == "off":
        assert offer.dhcp[3] == socket.inet_aton(HOST_ALIAS)   # router
        assert offer.dhcp[6] == socket.inet_aton("10.0.2.3")   # DNS (never queried here)
    else:
        assert 3 not in offer.dhcp and 6 not in offer.dhcp
    g.send(dhcp_frame(packets.REQUEST, requested=GUEST_IP, server=HOST_ALIAS))
    ack = g.wait(is_dhcp(packets.ACK))
    assert ack.yiaddr == GUEST_IP
    stats = g.net.statistics()
    assert stats["tx_frames"] == 2 and stats["rx_frames"] >= 2


def test_other_network_and_dhcp_start(guests):
    g = guests("user,id=u1,restrict=on,ipv6=off,net=192.168.76.0/24,dhcpstart=192.168.76.40")
    g.send(dhcp_frame(packets.DISCOVER))
    offer = g.wait(is_dhcp(packets.OFFER))
    assert offer.yiaddr == "192.168.76.40" and offer.ip_src == "192.168.76.2"


def test_tcp_through_the_host_alias_to_loopback(guests):
    """The host alias is the host's loopback: needs restrict=off, and the guest only
    ever addresses 10.0.2.2."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    g = guests("user,id=u2,restrict=off,ipv6=off")
    try:
        gw = g.gateway_mac()
        g.tcp(gw, HOST_ALIAS, 40000, port, 1000, 0, TCP_SYN, mss=1460)
        conn, peer = server.accept()  # libslirp connected to 127.0.0.1
        assert peer[0] == "127.0.0.1"
        synack = g.wait(lambda p: p.flags is not None and p.flags & TCP_SYN)
        assert synack.flags & TCP_ACK and synack.ack == 1001 and synack.l4_ok
        assert (synack.ip_src, synack.sport, synack.dport) == (HOST_ALIAS, port, 40000)
        theirs = synack.seq + 1
        g.tcp(gw, HOST_ALIAS, 40000, port, 1001, theirs, TCP_ACK)
        g.tcp(gw, HOST_ALIAS, 40000, port, 1001, theirs, TCP_ACK | TCP_PSH, b"ping from guest")
        conn.settimeout(5)
        assert conn.recv(100) == b"ping from guest"
        conn.sendall(b"pong from host")
        data = g.wait(lambda p: p.proto == packets.IP_TCP and p.payload)
        assert data.payload == b"pong from host" and data.seq == theirs and data.l4_ok
        assert data.ack == 1001 + len(b"ping from guest")
        conn.close()
    finally:
        server.close()


def test_restrict_on_keeps_the_guest_from_the_host(guests):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(1.0)
    port = server.getsockname()[1]
    g = guests("user,id=u3,restrict=on,ipv6=off")
    try:
        gw = g.gateway_mac()
        g.tcp(gw, HOST_ALIAS, 40001, port, 7, 0, TCP_SYN)
        reset = g.wait(lambda p: p.flags is not None and p.flags & TCP_RST)
        assert reset.dport == 40001
        with pytest.raises(TimeoutError):
            server.accept()  # nothing came through
    finally:
        server.close()


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_hostfwd_from_loopback_to_the_guest(guests):
    port = free_port()
    g = guests(f"user,id=u4,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:{port}-:8080")
    result: dict[str, object] = {}

    def host_side() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello guest")
            result["reply"] = s.recv(100)

    client = threading.Thread(target=host_side)
    client.start()
    try:
        syn = g.wait(lambda p: p.flags is not None and p.flags & TCP_SYN, 10)
        assert (syn.ip_dst, syn.dport) == (GUEST_IP, 8080) and syn.l4_ok
        gw = syn.src
        g.tcp(gw, syn.ip_src, 8080, syn.sport, 5000, syn.seq + 1, TCP_SYN | TCP_ACK)
        data = g.wait(lambda p: p.proto == packets.IP_TCP and p.payload, 10)
        assert data.payload == b"hello guest" and data.ack == 5001
        g.tcp(gw, syn.ip_src, 8080, syn.sport, 5001, data.seq + len(data.payload),
              TCP_ACK | TCP_PSH, b"hello host")
        client.join(10)
        assert result.get("reply") == b"hello host"
    finally:
        client.join(10)


@pytest.mark.parametrize("rule, parsed", [
    ("tcp:127.0.0.1:2222-:22", (False, "127.0.0.1", 2222, "", 22)),
    ("udp::5555-10.0.2.15:53", (True, "", 5555, "10.0.2.15", 53)),
    (":127.0.0.1:80-:8080", (False, "127.0.0.1", 80, "", 8080)),
])
def test_hostfwd_rules(rule, parsed):
    assert parse_hostfwd(rule) == parsed


@pytest.mark.parametrize("text, message", [
    ("user,id=x,hostfwd=sctp:127.0.0.1:1-:2", "expected \\[tcp\\|udp\\]"),
    ("user,id=x,hostfwd=tcp:127.0.0.1:1:2", "invalid forwarding rule"),
    ("user,id=x,hostfwd=tcp:127.0.0.1:99999-:22", "invalid forwarding rule"),
    ("user,id=x,net=10.0.2.0/30", "too small"),
    ("user,id=x,dhcpstart=192.168.1.5", "not in 10.0.2.0/24"),
    ("user,id=x,restrict=maybe", "expected on or off"),
    ("user,id=x,ipv4=off,ipv6=off", "leave nothing"),
    ("user,id=x,guestfwd=tcp:10.0.2.100:80-cmd:true", "invalid parameter 'guestfwd'"),
])
def test_option_errors(text, message):
    with pytest.raises(NetdevError, match=message):
        create_netdev(NetdevSpec.parse(text))


def test_hostfwd_on_a_busy_port_is_an_error():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(NetdevError, match="could not set up host forwarding"):
            SlirpNet("x", restrict="on", hostfwd=f"tcp:127.0.0.1:{busy.getsockname()[1]}-:22")
    finally:
        busy.close()
