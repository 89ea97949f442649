"""virtio-net under a real Linux guest on riscv-virt, with every back-end.

Traffic stays on this machine: ``-netdev user`` only reaches the host's loopback
(its host alias 10.0.2.2 and forwarded ports), two guests meet over a socket on
127.0.0.1, and the TAP interface lives in a network namespace the test makes.
No name is looked up.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, NetdevSpec
from vmforge.testing.netns import move_tap, network_namespace
from vmforge.testing.oracles import require_program

from .test_virt_boot import PROMPT
from .test_virt_virtio_linux import STEP, boot, poweroff, sh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving ``hello.txt``; yields its port."""
    (tmp_path / "hello.txt").write_text("hello from the host\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, directory=str(tmp_path), **kw)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def nic(netdev: NetdevSpec, **props: str) -> dict:
    return {"netdevs": [netdev],
            "devices": [DeviceSpec("virtio-net-device", {"netdev": netdev.id, **props})]}


def test_user_dhcp_fetch_from_host_and_hostfwd(http_server: int) -> None:
    port = free_port()
    netdev = NetdevSpec("user", "n0", {"restrict": "off",
                                       "hostfwd": [f"tcp:127.0.0.1:{port}-:8080"]})
    console = BufferChar()
    m = boot(console, **nic(netdev, mac="52:54:00:12:34:99"))
    try:
        out = sh(console, "cat /sys/class/net/eth0/address; udhcpc -i eth0 -n -q 2>&1 | "
                          "tail -2; ifconfig eth0; route -n")
        assert "52:54:00:12:34:99" in out and "10.0.2.15" in out, out
        out = sh(console, f"wget -q -O - http://10.0.2.2:{http_server}/hello.txt")
        assert "hello from the host" in out, out
        sh(console, "mkdir -p /tmp/www && echo served-by-the-guest > /tmp/www/index.html && "
                    "httpd -p 8080 -h /tmp/www && echo started", "started")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as r:
            assert r.read() == b"served-by-the-guest\n"
        poweroff(m, console)
    finally:
        m.stop()


def test_two_guests_joined_by_the_socket_backend_ping() -> None:
    port = free_port()
    a, b = BufferChar(), BufferChar()
    ma = boot(a, **nic(NetdevSpec("socket", "n0", {"listen": f"127.0.0.1:{port}"})))
    try:
        mb = boot(b, **nic(NetdevSpec("socket", "n0", {"connect": f"127.0.0.1:{port}"}),
                           mac="52:54:00:12:34:57"))
        try:
            sh(a, "ifconfig eth0 192.168.77.1 up")
            sh(b, "ifconfig eth0 192.168.77.2 up")
            out = sh(b, "ping -c 3 -W 5 192.168.77.1")
            assert "3 packets received" in out, out
            out = sh(a, "ping -c 2 -W 5 192.168.77.2")
            assert "2 packets received" in out, out
            poweroff(mb, b)
        finally:
            mb.stop()
        poweroff(ma, a)
    finally:
        ma.stop()


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


def test_tap_in_a_namespace_answers_the_guests_ping(netns: str) -> None:
    ifname = f"vmft{os.getpid() % 100000}"
    console = BufferChar()
    m = boot(console, **nic(NetdevSpec("tap", "n0", {"ifname": ifname, "script": "no",
                                                     "downscript": "no"})))
    try:
        move_tap(ifname, netns, "10.77.0.1/24")
        sh(console, "ifconfig eth0 10.77.0.2 netmask 255.255.255.0 up")
        out = sh(console, "ping -c 3 -W 5 10.77.0.1")
        assert "3 packets received" in out, out
        # and the other way: the namespace pings the guest
        ping = require_program("ping", "iputils-ping")
        back = subprocess.run(["ip", "netns", "exec", netns, ping, "-c", "2", "-W", "5",
                               "10.77.0.2"], capture_output=True, text=True, timeout=60)
        assert back.returncode == 0, back.stdout + back.stderr
        console.feed(b"\n")
        console.wait_for(PROMPT, timeout=STEP)
        poweroff(m, console)
    finally:
        m.stop()
    assert re.search(rb"3 packets received", console.output)
