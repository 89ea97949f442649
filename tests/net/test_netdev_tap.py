"""-netdev tap inside a network namespace the test creates: the tap is moved into
it and given an address there, so the only host that answers is that
namespace's kernel (ARP, ping); nothing reaches any other network."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from vmforge.config import NetdevSpec
from vmforge.net import NetdevError, create_netdev, packets
from vmforge.net.tap import TapNet
from vmforge.testing.netns import move_tap, network_namespace, open_tap
from vmforge.testing.virtio_driver import DeviceLoop

NS_ADDR, GUEST_ADDR = "10.77.0.1", "10.77.0.2"
GUEST_MAC = bytes.fromhex("525400770002")


class Collector:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def can_receive(self) -> bool:
        return True

    def receive(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def send_ready(self) -> None:
        pass


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


def tap_in(netns: str, loop: DeviceLoop) -> TapNet:
    """A tap back-end whose interface lives in ``netns`` as NS_ADDR/24."""
    tap = open_tap("tap,id=t0,ifname=vmft%d,script=no,downscript=no", loop.call_soon)
    assert isinstance(tap, TapNet) and tap.ifname.startswith("vmft")
    move_tap(tap.ifname, netns, f"{NS_ADDR}/24")
    return tap


def wait_for(loop: DeviceLoop, nic: Collector, match, timeout: float = 5.0):
    """The first frame ``match(parsed)`` accepts."""
    found: list = []

    def seen() -> bool:
        for f in nic.frames:
            pkt = packets.parse(f)
            if match(pkt):
                found.append(pkt)
                return True
        return False

    assert loop.run_until(seen, timeout), [packets.parse(f) for f in nic.frames]
    return found[0]


def test_arp_and_ping_with_the_namespace_kernel(netns):
    loop = DeviceLoop()
    tap = tap_in(netns, loop)
    nic = Collector()
    tap.attach(nic)
    try:
        request = packets.ether(packets.BROADCAST, GUEST_MAC, packets.ETH_ARP, packets.arp(
            packets.ARP_REQUEST, GUEST_MAC, GUEST_ADDR, bytes(6), NS_ADDR))
        assert tap.send([request])
        reply = wait_for(loop, nic, lambda p: p.arp_op == packets.ARP_REPLY)
        ns_mac = reply.arp_sender[0]
        assert reply.arp_sender[1] == NS_ADDR and reply.dst == GUEST_MAC
        payload = b"vmforge tap " * 8
        echo = packets.ether(ns_mac, GUEST_MAC, packets.ETH_IP, packets.ipv4(
            GUEST_ADDR, NS_ADDR, packets.IP_ICMP, packets.icmp_echo(0x77, 1, payload)))
        head, tail = memoryview(echo)[:20], memoryview(echo)[20:]
        assert tap.send([head, tail])  # written with one writev, as guest memory views
        pong = wait_for(loop, nic, lambda p: p.icmp_type == packets.ICMP_ECHO_REPLY)
        assert pong.ip_src == NS_ADDR and pong.ip_dst == GUEST_ADDR
        assert pong.ip_ok and pong.l4_ok and pong.payload == payload
        stats = tap.statistics()
        assert stats["tx_frames"] == 2 and stats["rx_frames"] >= 2
    finally:
        tap.close()


BROADCASTER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for i in range(int(sys.argv[1])):
    s.sendto(i.to_bytes(4, "big"), (sys.argv[2], 9999))
"""


def test_reading_stops_while_the_nic_is_full(netns):
    loop = DeviceLoop()
    tap = tap_in(netns, loop)
    nic = Collector()
    nic.can_receive = lambda: False  # type: ignore[method-assign]
    tap.attach(nic)
    try:
        # the namespace's kernel sends 300 broadcast datagrams out of the tap
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", BROADCASTER,
                        "300", "10.77.0.255"], check=True, timeout=30)
        deadline = time.monotonic() + 5
        while tap.pending_rx < tap.rx_queue_frames and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        assert tap.pending_rx == tap.rx_queue_frames and not nic.frames  # reading stopped
        del nic.can_receive  # the NIC has room again
        tap.accept_input()
        assert loop.run_until(lambda: tap.pending_rx == 0 and len(nic.frames) > 200, 5)
        seqs = [int.from_bytes(p.payload, "big") for p in map(packets.parse, nic.frames)
                if p.dport == 9999]
        assert len(seqs) > tap.rx_queue_frames and seqs == sorted(seqs)  # in order
    finally:
        tap.close()


def test_tap_errors():
    with pytest.raises(NetdevError, match="longer than 15"):
        TapNet("t", ifname="x" * 16, script="no", downscript="no")
    with pytest.raises(NetdevError, match="fd= excludes"):
        TapNet("t", fd="3", ifname="tap0")
    with pytest.raises(NetdevError, match="invalid parameter 'vhost'"):
        create_netdev(NetdevSpec.parse("tap,id=t,vhost=on"))
