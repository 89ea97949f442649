"""A network namespace and a tap in it, for tests of ``-netdev tap``.

The tap is moved into a namespace the test creates and given an address
there, so the only host that answers the guest is that namespace's kernel:
nothing reaches any other network.  Without ``/dev/net/tun``, ``ip``,
namespaces or ``CAP_NET_ADMIN`` the test is skipped (failed in CI), as for
any missing oracle::

    @pytest.fixture
    def netns() -> Iterator[str]:
        with network_namespace() as name:
            yield name

    def test_ping(netns):
        tap = open_tap("tap,id=t0,ifname=vmft%d,script=no,downscript=no", loop.call_soon)
        move_tap(tap.ifname, netns, "10.77.0.1/24")
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vmforge.config import NetdevSpec
from vmforge.net import NetdevError, create_netdev
from vmforge.net.backend import NetBackend
from vmforge.testing.oracles import oracle_missing, require_program

__all__ = ["ip", "move_tap", "network_namespace", "open_tap"]


def ip(*args: str) -> None:
    """``ip ARGS`` (iproute2), raising on failure."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def network_namespace() -> Iterator[str]:
    """A new network namespace's name, deleted afterwards."""
    if not os.path.exists("/dev/net/tun"):
        oracle_missing("/dev/net/tun is missing (the tun kernel module)")
    require_program("ip", "iproute2")
    name = f"vmforge-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        oracle_missing(f"cannot create a network namespace: {exc.stderr.decode().strip()}")
    try:
        yield name
    finally:
        ip("netns", "del", name)


def open_tap(spec: str, machine_or_call_soon: Any = None) -> NetBackend:
    """The ``-netdev`` back-end ``spec`` (a tap; :func:`~vmforge.net.create_netdev`'s
    arguments); skipped without ``CAP_NET_ADMIN``."""
    try:
        return create_netdev(NetdevSpec.parse(spec), machine_or_call_soon)
    except NetdevError as exc:
        if "CAP_NET_ADMIN" in str(exc):
            oracle_missing(str(exc))
        raise


def move_tap(ifname: str, netns: str, address: str) -> None:
    """Move the interface into ``netns``, give it ``address`` (``A.B.C.D/N``), bring it up."""
    ip("link", "set", ifname, "netns", netns)
    ip("-n", netns, "addr", "add", address, "dev", ifname)
    ip("-n", netns, "link", "set", ifname, "up")
