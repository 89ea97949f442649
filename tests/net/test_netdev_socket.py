"""-netdev socket on 127.0.0.1: QEMU's stream framing both ways, flow control, the
listen side taking the next connection, UDP, option errors, and QEMU itself at
the other end of the cable (its slirp answering a DHCP DISCOVER)."""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import pytest

from vmforge.config import NetdevSpec
from vmforge.net import MAX_FRAME, NetdevError, create_netdev, packets
from vmforge.net.socket import SocketNet
from vmforge.testing.oracles import require_program
from vmforge.testing.virtio_driver import DeviceLoop

LOOPBACK = "127.0.0.1"


class Collector:
    """A NIC stand-in: takes frames while ``open``, counts ``send_ready``."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.open = True
        self.ready = 0

    def can_receive(self) -> bool:
        return self.open

    def receive(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def send_ready(self) -> None:
        self.ready += 1


def frame(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">I", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


@pytest.fixture
def listener():
    loop = DeviceLoop()
    backend = SocketNet("s0", listen=f"{LOOPBACK}:0", dispatch=loop.call_soon)
    nic = Collector()
    backend.attach(nic)
    yield backend, nic, loop
    backend.close()


def connect(backend: SocketNet, loop: DeviceLoop) -> socket.socket:
    peer = socket.create_connection(backend.address[:2], timeout=5)
    assert loop.run_until(lambda: backend.connected, 5)
    return peer


def test_stream_framing_both_ways(listener):
    backend, nic, loop = listener
    peer = connect(backend, loop)
    sizes = [60, 1514, 9000, 1]
    peer.sendall(b"".join(struct.pack(">I", n) + frame(n, n) for n in sizes))
    assert loop.run_until(lambda: len(nic.frames) == 4, 5)
    assert nic.frames == [frame(n, n) for n in sizes]
    # guest frames leave as buffers; the peer reads QEMU's 4-byte big-endian length first
    assert backend.send([memoryview(frame(100, 1))[:40], frame(100, 1)[40:]])
    assert read_frame(peer) == frame(100, 1)
    stats = backend.statistics()
    assert stats["rx_frames"] == 4 and stats["tx_frames"] == 1 and stats["tx_bytes"] == 100
    peer.close()


def test_frames_split_across_reads_are_reassembled(listener):
    backend, nic, loop = listener
    peer = connect(backend, loop)
    data = b"".join(struct.pack(">I", n) + frame(n, 7) for n in (300, 70))
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), 3):
        peer.sendall(data[i:i + 3])
        time.sleep(0.0005)
    assert loop.run_until(lambda: len(nic.frames) == 2, 5)
    assert nic.frames == [frame(300, 7), frame(70, 7)]
    peer.close()


def test_reading_stops_while_the_nic_has_no_room(listener):
    backend, nic, loop = listener
    nic.open = False
    peer = connect(backend, loop)
    count = 3 * backend.rx_queue_frames  # 192 kB: more than the back-end reads at once
    peer.sendall(b"".join(struct.pack(">I", 1000) + frame(1000, i) for i in range(count)))
    time.sleep(0.3)
    loop.run()
    queued = backend.pending_rx
    assert backend.rx_queue_frames <= queued < count  # stopped reading: TCP holds the rest
    nic.open = True
    backend.accept_input()  # the NIC has buffers again
    assert loop.run_until(lambda: len(nic.frames) == count, 5)
    assert nic.frames == [frame(1000, i) for i in range(count)]  # in order, none lost
    peer.close()


def test_output_queue_fills_and_drains(listener):
    backend, nic, loop = listener
    peer = connect(backend, loop)
    big = frame(60000)
    sent = 0
    while backend.can_send():
        assert backend.send([big])
        sent += 1
        assert sent < 2000  # the peer does not read: kernel buffers, then the queue fill
    assert backend.statistics()["tx_pending"] >= backend.tx_queue_bytes
    got = [read_frame(peer) for _ in range(sent)]  # the peer reads: the queue drains
    assert got == [big] * sent
    assert loop.run_until(lambda: nic.ready == 1, 5)  # the NIC is told to go on
    assert backend.can_send()
    peer.close()


def test_listener_takes_the_next_connection(listener):
    backend, nic, loop = listener
    first = connect(backend, loop)
    first.close()
    assert loop.run_until(lambda: not backend.connected, 5)
    assert not backend.send([frame(60)])  # nothing connected: dropped, as an unplugged cable
    second = connect(backend, loop)
    second.sendall(struct.pack(">I", 60) + frame(60, 2))
    assert loop.run_until(lambda: nic.frames == [frame(60, 2)], 5)
    assert backend.statistics()["tx_dropped"] == 1
    second.close()


def test_too_long_frame_ends_the_connection(listener):
    backend, _nic, loop = listener
    peer = connect(backend, loop)
    peer.sendall(struct.pack(">I", MAX_FRAME + 1))
    assert loop.run_until(lambda: not backend.connected, 5)
    peer.settimeout(5)
    assert peer.recv(1) == b""  # closed by the back-end
    peer.close()


def test_two_back_ends_joined_by_listen_and_connect():
    loop = DeviceLoop()
    a = create_netdev(NetdevSpec.parse(f"socket,id=a,listen={LOOPBACK}:0"), loop.call_soon)
    port = a.address[1]
    b = create_netdev(NetdevSpec.parse(f"socket,id=b,connect={LOOPBACK}:{port}"), loop)
    try:
        na, nb = Collector(), Collector()
        a.attach(na)
        b.attach(nb)
        assert loop.run_until(lambda: a.connected, 5)
        assert b.send([frame(1000, 1)]) and a.send([frame(500, 2)])
        assert loop.run_until(lambda: na.frames and nb.frames, 5)
        assert na.frames == [frame(1000, 1)] and nb.frames == [frame(500, 2)]
    finally:
        a.close()
        b.close()


def test_udp_datagrams():
    loop = DeviceLoop()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LOOPBACK, 0))
    port_a = probe.getsockname()[1]
    probe.close()
    b = SocketNet("b", udp=f"{LOOPBACK}:{port_a}", localaddr=f"{LOOPBACK}:0",
                  dispatch=loop.call_soon)
    a = SocketNet("a", udp=f"{LOOPBACK}:{b.address[1]}", localaddr=f"{LOOPBACK}:{port_a}",
                  dispatch=loop.call_soon)
    try:
        na, nb = Collector(), Collector()
        a.attach(na)
        b.attach(nb)
        assert a.send([frame(100, 1)]) and b.send([frame(1400, 2)])
        assert loop.run_until(lambda: na.frames and nb.frames, 5)
        assert nb.frames == [frame(100, 1)] and na.frames == [frame(1400, 2)]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("text, message", [
    ("socket,id=x", "exactly one of listen=, connect=, udp="),
    ("socket,id=x,listen=127.0.0.1:0,connect=127.0.0.1:1", "exactly one of"),
    ("socket,id=x,udp=127.0.0.1:9", "udp= needs localaddr="),
    ("socket,id=x,listen=127.0.0.1", "expected HOST:PORT"),
    ("socket,id=x,connect=:80", "a host is needed"),
    ("socket,id=x,listen=127.0.0.1:0,mcast=230.0.0.1:1234", "invalid parameter 'mcast'"),
    ("bridge,id=x", "unknown type"),
])
def test_option_errors(text, message):
    with pytest.raises(NetdevError, match=message):
        create_netdev(NetdevSpec.parse(text))


def test_connection_refused_is_an_error():
    probe = socket.socket()
    probe.bind((LOOPBACK, 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    with pytest.raises(NetdevError, match="refused"):
        SocketNet("c", connect=f"{LOOPBACK}:{port}")


def test_qemu_joined_through_its_socket_netdev():
    """QEMU connects to our listener; its own slirp (restricted, on a hub with the
    socket) answers our DHCP DISCOVER: QEMU reads and writes our framing."""
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    loop = DeviceLoop()
    backend = SocketNet("s0", listen=f"{LOOPBACK}:0", dispatch=loop.call_soon)
    nic = Collector()
    backend.attach(nic)
    proc = subprocess.Popen(
        [qemu, "-M", "none", "-nodefaults", "-display", "none", "-monitor", "none",
         "-serial", "none",
         "-netdev", "user,id=u0,restrict=on,ipv6=off",
         "-netdev", f"socket,id=s0,connect={LOOPBACK}:{backend.address[1]}",
         "-netdev", "hubport,id=h0,hubid=0,netdev=u0",
         "-netdev", "hubport,id=h1,hubid=0,netdev=s0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert loop.run_until(lambda: backend.connected, 20), "QEMU did not connect"
        mac = bytes.fromhex("525400aabb07")
        discover = packets.ether(packets.BROADCAST, mac, packets.ETH_IP, packets.ipv4(
            "0.0.0.0", "255.255.255.255", packets.IP_UDP, packets.udp(
                "0.0.0.0", "255.255.255.255", 68, 67,
                packets.dhcp(mac, 0x5EED, packets.DISCOVER))))
        assert backend.send([discover])
        assert loop.run_until(lambda: nic.frames, 10), "no answer from QEMU"
        offer = packets.parse(nic.frames[0])
        assert offer.dst in (mac, packets.BROADCAST) and offer.ip_ok and offer.l4_ok
        assert offer.dhcp[53] == bytes([packets.OFFER]) and offer.yiaddr == "10.0.2.15"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        backend.close()
