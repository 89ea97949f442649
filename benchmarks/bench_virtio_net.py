"""virtio-net from a Linux guest: TCP from the guest to the host, vmforge vs
QEMU 7.2 side by side, over ``-netdev user`` (both through Debian's libslirp)
and over TAP (the host end in a network namespace the benchmark makes).

Run: ``.venv/bin/python -m pytest benchmarks/bench_virtio_net.py
--benchmark-columns=min,mean,max,rounds`` (needs ``make guests``, Debian's
opensbi, qemu-system-misc, libslirp0, iproute2; TAP needs root).  A round
sends 16 MiB with ``dd if=/dev/zero bs=64k count=256 | nc HOST PORT`` typed at
the guest's shell; it is timed on the host from the keystroke until the
receiver has every byte.  MB/s is in ``extra_info``.  Traffic goes to the
host's loopback (user) or into the namespace (TAP) only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.testing.console import ProcessConsole
from vmforge.testing.netns import move_tap, network_namespace
from vmforge.testing.oracles import require_files

from .bench_boot import FW_JUMP, SHELL_READY, shell_console

SIZE = 16 << 20
SEND = b"dd if=/dev/zero bs=64k count=256 2>/dev/null | nc %s %d; echo sent\n"
NS_ADDR, GUEST_ADDR = "10.78.0.1", "10.78.0.2"

#: a receiver that runs where the traffic arrives (host, or inside the namespace)
RECEIVER = r"""
import socket, sys
size = int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 0)); srv.listen(4)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    got = 0
    while got < size:
        data = conn.recv(1 << 20)
        if not data:
            break
        got += len(data)
    conn.close()
    print(got, flush=True)
"""


class Receiver:
    """The receiving end: a child process that prints its port, then the byte
    count of each connection."""

    def __init__(self, prefix: list[str], addr: str) -> None:
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", RECEIVER, addr, str(SIZE)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def wait_all(self) -> int:
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


#: (emulator, its console, the receiver, the address the guest sends to)
Link = tuple[str, ProcessConsole, Receiver, str]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


def _wait_for_link(ifname: str) -> None:
    deadline = time.monotonic() + 30
    while not Path(f"/sys/class/net/{ifname}").exists():
        assert time.monotonic() < deadline, f"{ifname} never appeared"
        time.sleep(0.05)


def _boot(emulator: str, backend: str, ifname: str) -> ProcessConsole:
    netdev = ("user,id=n0" if backend == "user" else
              f"tap,id=n0,ifname={ifname},script=no,downscript=no")
    return shell_console(emulator, "-netdev", netdev, "-device", "virtio-net-device,netdev=n0")


@pytest.fixture(scope="module", params=[("vmforge", "user"), ("qemu", "user"),
                                        ("vmforge", "tap"), ("qemu", "tap")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def guest_link(request: pytest.FixtureRequest) -> Iterator[Link]:
    require_files([FW_JUMP], "Debian's OpenSBI (apt-get install opensbi)")
    emulator, backend = request.param
    ifname = f"vmfb{os.getpid() % 10000}{emulator[0]}"
    ns = request.getfixturevalue("netns") if backend == "tap" else None
    console = _boot(emulator, backend, ifname)
    receiver: Receiver | None = None
    try:
        console.wait_for(SHELL_READY, timeout=300)
        if ns is not None:
            _wait_for_link(ifname)
            move_tap(ifname, ns, f"{NS_ADDR}/24")
            console.feed(f"ifconfig eth0 {GUEST_ADDR} netmask 255.255.255.0 up\n".encode())
            receiver = Receiver(["ip", "netns", "exec", ns], NS_ADDR)
            target = NS_ADDR
        else:
            console.feed(b"udhcpc -i eth0 -n -q >/dev/null 2>&1\n")
            receiver = Receiver([], "127.0.0.1")
            target = "10.0.2.2"               # the host alias: the host's loopback
        console.wait_for(SHELL_READY, timeout=120)
        yield emulator, console, receiver, target
    finally:
        if receiver is not None:
            receiver.close()
        console.close()


def test_tcp_guest_to_host(benchmark, guest_link: Link) -> None:
    emulator, console, receiver, target = guest_link
    got: list[int] = []

    def run() -> float:
        t0 = time.perf_counter()
        console.feed(SEND % (target.encode(), receiver.port))
        got.append(receiver.wait_all())
        seconds = time.perf_counter() - t0
        console.wait_for(b"sent", timeout=120)
        console.wait_for(SHELL_READY, timeout=60)
        return seconds

    benchmark.group = "virtio-net: 16 MiB TCP guest -> host"
    benchmark.extra_info["emulator"] = emulator
    run()                                          # warm
    benchmark.pedantic(run, rounds=3, iterations=1)
    assert set(got) == {SIZE}, got
    if benchmark.stats:                 # None with --benchmark-disable
        benchmark.extra_info["MB/s"] = round(SIZE / benchmark.stats.stats.min / 1e6, 1)


def test_receiver_counts(tmp_path: Path) -> None:
    """The receiver itself (so a broken one cannot pass for a slow network)."""
    r = Receiver([], "127.0.0.1")
    try:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            threading.Thread(target=s.sendall, args=(bytes(SIZE),)).start()
            assert r.wait_all() == SIZE
    finally:
        r.close()
