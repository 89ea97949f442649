"""-drive / -device / -chardev resolved into devices (vmforge.devspec)."""

from __future__ import annotations

from typing import Any

import pytest

from vmforge.chardev import BufferChar, CharBackend
from vmforge.config import DeviceSpec, DriveSpec
from vmforge.device import DeviceError
from vmforge.devspec import ChardevSpec, DeviceSpecError, cmdline_devices


class Fake:
    def __init__(self, name: str, **props: Any) -> None:
        self.name = name
        self.props = props
        self.released = False
        self.chardev: CharBackend | None = props.get("chardev")

    def unrealize(self) -> None:
        self.released = True

    def set_chardev(self, chardev: CharBackend | None) -> None:
        self.chardev = chardev


def make(drives: list[DriveSpec], devices: list[DeviceSpec], chardevs: dict | None = None,
         fail_on: str | None = None) -> list[Fake]:
    made: list[Fake] = []

    def create(name: str, **props: Any) -> Fake:
        if name == fail_on:
            raise DeviceError(f"{name}: refused")
        made.append(Fake(name, **props))
        return made[-1]

    try:
        return cmdline_devices(drives, devices, chardevs or {}, create)  # type: ignore[arg-type]
    finally:
        make.made = made  # type: ignore[attr-defined]


def test_qemu_order_devices_first_then_virtio_drives() -> None:
    devs = make([DriveSpec.parse("file=a.qcow2,format=qcow2"),
                 DriveSpec.parse("file=b.raw,if=none,id=hd1,readonly=on,cache=unsafe")],
                [DeviceSpec.parse("virtio-rng-device"),
                 DeviceSpec.parse("virtio-blk-device,drive=hd1,serial=S1,num-queues=2")])
    assert [d.name for d in devs] == ["virtio-rng-device", "virtio-blk-device",
                                      "virtio-blk-device"]
    assert devs[1].props == {"drive": "b.raw", "readonly": True, "cache": "unsafe",
                             "serial": "S1", "num_queues": "2"}
    assert devs[2].props == {"drive": "a.qcow2", "readonly": False, "format": "qcow2"}


@pytest.mark.parametrize(("drives", "devices", "message"), [
    (["file=x,if=ide"], [], "if=ide is not supported"),
    (["file=x,if=none"], [], "needs an id="),
    (["file=x,if=none,id=d"], [], "not used by any -device"),
    ([], ["virtio-blk-device,drive=nope"], "drive 'nope' not found"),
    (["file=x,if=none,id=d"], ["virtio-blk-device,drive=d", "virtio-blk-device,drive=d"],
     "already in use"),
    (["file=x,if=none,id=d", "file=y,if=none,id=d"], [], "given twice"),
    (["file=x,bogus=1"], [], "unsupported option 'bogus'"),
    ([], ["virtconsole,chardev=c0"], "needs a virtio-serial device"),
    ([], ["virtio-serial-device,chardev=c9"], "chardev 'c9' not found"),
])
def test_mistakes_are_named(drives: list[str], devices: list[str], message: str) -> None:
    with pytest.raises(DeviceSpecError, match=message):
        make([DriveSpec.parse(d) for d in drives], [DeviceSpec.parse(d) for d in devices])


def test_a_failure_lets_go_of_what_was_made() -> None:
    with pytest.raises(DeviceSpecError, match="refused"):
        make([DriveSpec.parse("file=a.raw")], [DeviceSpec.parse("virtio-rng-device"),
                                               DeviceSpec.parse("virtio-bad")],
             fail_on="virtio-bad")
    made = make.made  # type: ignore[attr-defined]
    assert [d.released for d in made] == [True]


def test_qemu_short_names_resolve_to_the_boards_transport() -> None:
    from vmforge.devspec import PCI_ALIASES

    made: list[Fake] = []

    def create(name: str, **props: Any) -> Fake:
        made.append(Fake(name, **props))
        return made[-1]

    devs = cmdline_devices([DriveSpec.parse("file=a.raw,format=raw")],
                           [DeviceSpec.parse("virtio-rng"), DeviceSpec.parse("virtio-serial"),
                            DeviceSpec.parse("virtconsole,chardev=c0")],
                           {"c0": BufferChar()}, create, aliases=PCI_ALIASES)  # type: ignore[arg-type]
    assert [d.name for d in devs] == ["virtio-rng-pci", "virtio-serial-pci", "virtio-blk-pci"]
    assert devs[1].chardev is not None


def test_virtconsole_gives_its_chardev_to_the_serial_device_before_it() -> None:
    port = BufferChar()
    devs = make([], [DeviceSpec.parse("virtio-serial-device"),
                     DeviceSpec.parse("virtconsole,chardev=c0")], {"c0": port})
    assert len(devs) == 1 and devs[0].chardev is port


def test_chardev_specs(tmp_path) -> None:
    spec = ChardevSpec.parse(f"file,id=log,path={tmp_path / 'out.txt'}")
    assert (spec.backend, spec.id) == ("file", "log")
    devs = make([], [DeviceSpec.parse("virtio-serial-device,chardev=log")], {"log": spec})
    assert devs[0].props["chardev"] is not None
    with pytest.raises(DeviceSpecError, match="unknown back-end"):
        ChardevSpec.parse("pty,id=s").open()
    with pytest.raises(DeviceSpecError, match="port='x' is not a number"):
        ChardevSpec.parse("socket,id=s,port=x").open()
    with pytest.raises(DeviceSpecError, match="needs a back-end and id="):
        ChardevSpec.parse("stdio")


def test_command_line(tmp_path, vmforge_cli) -> None:
    listed = vmforge_cli("run", "-device", "help")
    assert listed.returncode == 0 and '"virtio-blk-device"' in listed.stdout
    props = vmforge_cli("run", "-device", "virtio-blk-device,help")
    assert props.returncode == 0 and "drive=<str>" in props.stdout
    kernel = tmp_path / "k.bin"
    kernel.write_bytes(b"\x6f\x00\x00\x00")                  # j .
    base = ["run", "-M", "riscv-virt", "-bios", "none", "-kernel", str(kernel),
            "-nographic", "--timeout", "0.2"]
    for extra, message in [
            (["-drive", f"file={tmp_path / 'missing.qcow2'}"], "missing.qcow2"),
            (["-drive", "file=x,if=ide"], "if=ide is not supported"),
            (["-device", "virtio-blk-device,drive=hd9"], "drive 'hd9' not found"),
            (["-device", "ns16550a"], "only virtio and PCI devices"),
            (["-device", "no-such-device"], "no-such-device")]:
        out = vmforge_cli(*base, *extra)
        assert out.returncode == 1, (extra, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(1 << 20))
    ok = vmforge_cli(*base, "-drive", f"file={disk},format=raw", "-device", "virtio-rng-device")
    assert ok.returncode == 124, ok.stderr
    # a guessed raw image opens as on QEMU, with its warning (block 0 stays raw)
    guessed = vmforge_cli(*base, "-hda", str(disk))
    assert guessed.returncode == 124, guessed.stderr
    assert "probing guessed raw" in guessed.stderr


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_socket_chardev_server_both_ways_and_next_client(tmp_path, kind: str) -> None:
    import socket
    import time

    text = ("socket,id=s,host=127.0.0.1,port=0,server=on,wait=off" if kind == "tcp"
            else f"socket,id=s,path={tmp_path / 'c.sock'},server=on,wait=off")
    backend = ChardevSpec.parse(text).open()
    assert backend is not None
    received = bytearray()

    class Front:
        def can_receive(self) -> int:
            return 4096

        def receive(self, data: bytes) -> None:
            received.extend(data)

    backend.attach(Front())
    try:
        backend.write(b"dropped: nobody is connected")
        for n in range(2):                       # a second client after the first left
            family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.connect(backend.address)    # type: ignore[attr-defined]
                client.sendall(f"to-guest-{n}".encode())
                deadline = time.monotonic() + 10
                while f"to-guest-{n}".encode() not in received:
                    assert time.monotonic() < deadline, received
                    time.sleep(0.01)
                backend.write(f"to-host-{n}".encode())
                assert client.recv(100) == f"to-host-{n}".encode()
    finally:
        backend.close()
