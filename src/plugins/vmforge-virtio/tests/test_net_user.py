"""virtio-net on -netdev user (vmforge-slirp, restricted): the guest-side driver sends
a DHCP DISCOVER through the transmit queue and libslirp's OFFER lands in the
receive buffers, header first."""

from __future__ import annotations

import struct

from vmforge.config import NetdevSpec
from vmforge.net import create_netdev, packets
from vmforge.testing.oracles import require_module
from vmforge.testing.virtio_driver import DeviceLoop
from vmforge.testing.virtio_kit import guest_memory, make
from vmforge_virtio.net import VirtioNet

MAC = bytes.fromhex("525400123401")


def test_dhcp_through_virtio_net_and_slirp():
    require_module("vmforge_slirp", "install src/plugins/vmforge-slirp (pip install -e)")
    loop = DeviceLoop()
    user = create_netdev(NetdevSpec.parse("user,id=u0,restrict=on,ipv6=off"), loop)
    dev = VirtioNet(user, mac="52:54:00:12:34:01")
    try:
        _d, _t, _drv, (rx, tx) = make(guest_memory(), device=dev, call_soon=loop.call_soon)
        for _ in range(4):
            rx.add_sgs([], [1526])
        rx.kick()
        discover = packets.ether(packets.BROADCAST, MAC, packets.ETH_IP, packets.ipv4(
            "0.0.0.0", "255.255.255.255", packets.IP_UDP, packets.udp(
                "0.0.0.0", "255.255.255.255", 68, 67, packets.dhcp(MAC, 7, packets.DISCOVER))))
        tx.add_sgs([bytes(12), discover[:100], discover[100:]], [])
        tx.kick()
        got = []
        assert loop.run_until(lambda: got.extend(rx.drain()) or got, 5)
        data = got[0].data()
        assert struct.unpack_from("<H", data, 10)[0] == 1  # num_buffers
        offer = packets.parse(data[12:])
        assert offer.dhcp[53] == bytes([packets.OFFER]) and offer.yiaddr == "10.0.2.15"
        assert offer.ip_ok and offer.l4_ok
        assert dev.statistics()["tx_frames"] == 1 and dev.statistics()["rx_frames"] == 1
    finally:
        dev.unrealize()
        user.close()
