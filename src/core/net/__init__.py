"""Network back-ends: the host end of a guest NIC (QEMU's ``-netdev``).

A NIC model (``virtio-net-device``) talks to a :class:`NetBackend` and never
knows which one:

- :mod:`vmforge.net.backend`: :class:`NetBackend` (send a guest frame, deliver
  outside frames on the machine's thread, flow control both ways, statistics,
  close), the :class:`NetFrontend` protocol a NIC implements, and
  :class:`BufferNet`, a back-end in memory for tests;
- :mod:`vmforge.net.socket`: ``-netdev socket`` (TCP ``listen=``/``connect=``
  with QEMU's 4-byte length framing, ``udp=``/``localaddr=``);
- :mod:`vmforge.net.tap`: ``-netdev tap`` (``/dev/net/tun``, ``IFF_TAP|IFF_NO_PI``);
- ``-netdev user`` (libslirp) is the plugin ``vmforge-slirp``: back-ends that
  need a C library live in their own distribution, found through the
  ``vmforge.netdev`` entry points (:mod:`vmforge.net.registry`);
- :mod:`vmforge.net.mac`: MAC addresses and QEMU's default series;
- :mod:`vmforge.net.packets`: a small Ethernet/ARP/IPv4/UDP/TCP/DHCP frame
  builder and parser, for tests and tools.

From a ``-netdev`` option to a NIC::

    from vmforge.config import NetdevSpec
    from vmforge.net import create_netdev

    backend = create_netdev(NetdevSpec.parse("socket,id=n0,listen=127.0.0.1:10000"),
                            machine)                  # frames arrive via machine.call_soon
    nic = machine.create_device("virtio-net-device", backend=backend)
"""

from vmforge.net.backend import MAX_FRAME, BufferNet, NetBackend, NetdevError, NetFrontend
from vmforge.net.mac import default_mac, format_mac, parse_mac
from vmforge.net.registry import create_netdev, netdev_class, netdev_types

__all__ = ["MAX_FRAME", "BufferNet", "NetBackend", "NetFrontend", "NetdevError",
           "create_netdev", "default_mac", "format_mac", "netdev_class", "netdev_types",
           "parse_mac"]
