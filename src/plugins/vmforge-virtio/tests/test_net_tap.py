"""virtio-net on -netdev tap, the tap moved into a network namespace the test
creates: a program in the namespace sends UDP to the guest; the guest side (this
test, through the driver) answers the kernel's ARP and echoes the datagram back."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vmforge.net import packets
from vmforge.testing.netns import move_tap, network_namespace, open_tap
from vmforge.testing.virtio_driver import DeviceLoop
from vmforge.testing.virtio_kit import guest_memory, make
from vmforge_virtio.net import VirtioNet

NS_ADDR, GUEST_ADDR = "10.78.0.1", "10.78.0.2"
GUEST_MAC = bytes.fromhex("525400780002")

CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"hello through virtio-net", (sys.argv[1], 7))
data, peer = s.recvfrom(2048)
print(peer[0], data.decode())
"""


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


def answer(frame: bytes) -> bytes | None:
    """What a guest stack would reply: ARP for GUEST_ADDR, a UDP echo on port 7."""
    pkt = packets.parse(frame)
    if pkt.arp_op == packets.ARP_REQUEST and pkt.arp_target[1] == GUEST_ADDR:
        mac, addr = pkt.arp_sender
        return packets.ether(mac, GUEST_MAC, packets.ETH_ARP, packets.arp(
            packets.ARP_REPLY, GUEST_MAC, GUEST_ADDR, mac, addr))
    if pkt.proto == packets.IP_UDP and pkt.dport == 7 and pkt.ip_dst == GUEST_ADDR:
        assert pkt.ip_ok and pkt.l4_ok
        return packets.ether(pkt.src, GUEST_MAC, packets.ETH_IP, packets.ipv4(
            GUEST_ADDR, pkt.ip_src, packets.IP_UDP, packets.udp(
                GUEST_ADDR, pkt.ip_src, 7, pkt.sport, pkt.payload.upper())))
    return None


def test_namespace_talks_to_the_guest(netns):
    loop = DeviceLoop()
    tap = open_tap("tap,id=t0,ifname=vmfv%d,script=no,downscript=no", loop)
    dev = VirtioNet(tap, mac="52:54:00:78:00:02")
    try:
        _d, _t, _drv, (rx, tx) = make(guest_memory(), device=dev, call_soon=loop.call_soon)
        move_tap(tap.ifname, netns, f"{NS_ADDR}/24")
        for _ in range(32):
            rx.add_sgs([], [1536])
        rx.kick()
        client = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT,
                                   GUEST_ADDR], stdout=subprocess.PIPE, text=True)
        replies = 0

        def serve() -> bool:
            nonlocal replies
            while (req := rx.get_buf()) is not None:
                data = req.data()
                assert struct.unpack_from("<H", data, 10)[0] == 1  # one 1536-byte buffer
                reply = answer(data[12:])
                if reply is not None:
                    tx.add_sgs([bytes(12), reply], [])
                    tx.kick()
                    replies += 1
                rx.add_sgs([], [1536])
                rx.kick()
            tx.drain()
            return client.poll() is not None

        assert loop.run_until(serve, 15), "the namespace's client did not finish"
        out = client.communicate(timeout=5)[0]
        assert client.returncode == 0 and out.strip() == f"{GUEST_ADDR} HELLO THROUGH VIRTIO-NET"
        assert replies >= 2  # an ARP reply and the echo
        stats = dev.statistics()
        assert stats["tx_frames"] == replies and stats["rx_frames"] >= 2
    finally:
        dev.unrealize()
        tap.close()
