"""vmforge.net without sockets: the registry and its entry points, the in-memory
back-end's flow control, MAC addresses, the frame builder's checksums, and the
virtio-net device finding its netdev on the machine it is realized on."""

from __future__ import annotations

import importlib.util
import types

import pytest

from vmforge.config import NetdevSpec
from vmforge.net import (
    MAX_FRAME,
    BufferNet,
    NetdevError,
    create_netdev,
    format_mac,
    netdev_class,
    netdev_types,
    packets,
    parse_mac,
)
from vmforge.net.socket import SocketNet
from vmforge.net.tap import TapNet
from vmforge.testing.virtio_kit import guest_memory


def test_builtin_types_and_the_user_plugin():
    types_ = netdev_types()
    assert types_["socket"] == "vmforge.net.socket:SocketNet"
    assert types_["tap"] == "vmforge.net.tap:TapNet"
    assert netdev_class("socket") is SocketNet and netdev_class("tap") is TapNet
    if importlib.util.find_spec("vmforge_slirp") is not None:
        assert types_["user"] == "vmforge_slirp.user:SlirpNet"
    else:
        with pytest.raises(NetdevError, match="install vmforge-slirp"):
            netdev_class("user")


def test_unknown_type_names_the_known_ones():
    with pytest.raises(NetdevError, match=r"unknown type .*known: .*socket.*tap"):
        create_netdev(NetdevSpec.parse("vde,id=v0"))


def test_create_netdev_takes_a_machine_or_its_call_soon():
    calls = []
    machine = types.SimpleNamespace(call_soon=lambda fn, *a: calls.append(fn))
    backend = create_netdev(NetdevSpec.parse("socket,id=s,listen=127.0.0.1:0"), machine)
    try:
        assert backend.id == "s" and backend.dispatch is machine.call_soon
    finally:
        backend.close()
    with pytest.raises(TypeError):
        create_netdev(NetdevSpec.parse("socket,id=s,listen=127.0.0.1:0"), 42)


class Nic:
    def __init__(self, room: int) -> None:
        self.room = room
        self.frames: list[bytes] = []
        self.ready = 0

    def can_receive(self) -> bool:
        return self.room > 0

    def receive(self, frame: bytes) -> bool:
        self.room -= 1
        self.frames.append(frame)
        return True

    def send_ready(self) -> None:
        self.ready += 1


def test_buffer_net_holds_frames_until_the_nic_has_room():
    net = BufferNet("b")
    nic = Nic(room=1)
    for i in range(3):
        net.inject(bytes([i]) * 60)
    net.attach(nic)
    assert nic.frames == [bytes(60)] and net.pending_rx == 2
    nic.room = 5
    net.accept_input()
    assert nic.frames == [bytes([i]) * 60 for i in range(3)] and net.pending_rx == 0
    assert net.statistics()["rx_frames"] == 3


def test_send_drops_what_no_wire_carries():
    net = BufferNet("b")
    assert not net.send([b""]) and not net.send([bytes(MAX_FRAME + 1)])
    assert net.send([b"ab", memoryview(b"cd")]) and net.sent == [b"abcd"]
    net.close()
    assert not net.send([b"late"])
    assert net.statistics()["tx_dropped"] == 3 and net.statistics()["tx_frames"] == 1


def test_mac_addresses():
    assert parse_mac("52:54:00:AB:cd:01") == bytes.fromhex("525400abcd01")
    assert parse_mac("52-54-00-ab-cd-01") == bytes.fromhex("525400abcd01")
    assert format_mac(bytes.fromhex("525400abcd01")) == "52:54:00:ab:cd:01"
    for bad in ("52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "52:54-00:ab:cd:01", "ff:ff:ff:ff:ff:ff"):
        with pytest.raises(NetdevError):
            parse_mac(bad)


def test_checksums_of_the_frame_builder():
    # RFC 1071's example: the words 0001 f203 f4f5 f6f7 sum to ddf2
    assert packets.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    ip = packets.ipv4("10.0.2.15", "10.0.2.2", packets.IP_UDP,
                      packets.udp("10.0.2.15", "10.0.2.2", 1234, 53, b"odd"))
    frame = packets.ether(packets.BROADCAST, bytes(6), packets.ETH_IP, ip)
    pkt = packets.parse(frame)
    assert pkt.ip_ok and pkt.l4_ok and pkt.payload == b"odd" and (pkt.sport, pkt.dport) == (
        1234, 53)
    broken = bytearray(frame)
    broken[-1] ^= 1
    assert not packets.parse(bytes(broken)).l4_ok


def test_virtio_net_finds_its_netdev_on_the_machine():
    net_mod = pytest.importorskip("vmforge_virtio.net")
    backend = BufferNet("n0")
    machine = types.SimpleNamespace(netdevs={"n0": backend},
                                    space=types.SimpleNamespace(memory=guest_memory()),
                                    call_soon=lambda fn, *a: fn(*a))
    dev = net_mod.VirtioNet(netdev="n0")
    dev.realize(machine)
    try:
        assert dev.backend is backend and backend.frontend is dev
        assert backend.dispatch is machine.call_soon  # frames reach it on the machine's thread
    finally:
        dev.unrealize()
    assert backend.frontend is None
    from vmforge.device import DeviceError
    with pytest.raises(DeviceError, match="netdev 'n9' not found"):
        net_mod.VirtioNet(netdev="n9").realize(machine)
