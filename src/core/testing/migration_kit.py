"""Two emulator processes for live-migration tests and benchmarks.

:class:`GuestProcess` runs ``vmforge run`` (or ``qemu-system-riscv64``) with the
serial console on a pipe and QMP on a UNIX socket: :meth:`GuestProcess.wait_for`
reads the console, :meth:`GuestProcess.type` types into it, :meth:`GuestProcess.qmp`
sends a command (a small synchronous client: the tests of the replies themselves
use ``qemu.qmp``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["GuestProcess", "free_port", "guest_file", "riscv_linux_args"]


def guest_file(root: Path, name: str) -> str:
    """The cached guest image ``name`` of ``root``'s guests/build.py (a missing one
    is a missing oracle: skipped locally, a failure in CI)."""
    from vmforge.testing.oracles import oracle_missing

    proc = subprocess.run([sys.executable, str(root / "guests" / "build.py"), "--print-path",
                           name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        oracle_missing(f"guest {name} is not built (python3 guests/build.py {name})")
    return proc.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def riscv_linux_args(kernel: str, initrd: str, disk: str | None, memory: int = 256,
                     append: str = "console=ttyS0") -> list[str]:
    """The machine options both vmforge and QEMU take for the riscv virt test guest."""
    args = ["-M", "virt", "-m", str(memory), "-kernel", kernel, "-initrd", initrd,
            "-append", append, "-serial", "stdio", "-display", "none"]
    if disk is not None:
        args += ["-drive", f"file={disk},format=qcow2,if=none,id=hd0",
                 "-device", "virtio-blk-device,drive=hd0"]
    return args


class GuestProcess:
    """One emulator process: console on a pipe, QMP on ``qmp_path``."""

    def __init__(self, argv: list[str], qmp_path: Path) -> None:
        if argv[0].startswith("qemu"):
            argv = [*argv, "-monitor", "none"]
        self.qmp_path = qmp_path
        self.output = bytearray()
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([*argv, "-qmp", f"unix:{qmp_path},server=on,wait=off"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = b""
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()
        self._sock: socket.socket | None = None
        self._file: Any = None
        self.events: list[dict[str, Any]] = []

    @classmethod
    def vmforge(cls, args: list[str], qmp_path: Path) -> GuestProcess:
        machine_args = ["riscv-virt" if a == "virt" else a for a in args]
        exe = Path(sys.executable).with_name("vmforge")
        return cls([str(exe), "run", *machine_args], qmp_path)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            with self._cond:
                self.output += chunk
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_for(self, text: bytes, timeout: float = 120.0, start: int = 0) -> int:
        """Wait until ``text`` is on the console (after offset ``start``); its end."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (pos := self.output.find(text, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(f"{text!r} not seen; console ends with "
                                       f"{bytes(self.output[-300:])!r}; stderr "
                                       f"{self.stderr[-500:]!r}")
                self._cond.wait(min(left, 0.5))
            return pos + len(text)

    def type(self, text: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command; its ``return`` value, or the error dict."""
        if self._sock is None:
            self._connect()
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        assert self._sock is not None
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("QMP connection closed")
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply.get("return", reply)

    def _connect(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(str(self.qmp_path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        self._sock = sock
        # reading only (a text file that also writes drops what it had read ahead:
        # events that came before a reply)
        self._file = sock.makefile("rb")
        self._file.readline()
        self.qmp("qmp_capabilities")

    def wait_migration(self, timeout: float = 300.0) -> dict[str, Any]:
        """Poll query-migrate until the migration ends; the last reply."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return dict(info)
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration still {info.get('status')}")
            time.sleep(0.05)

    def close(self, timeout: float = 10.0) -> int | None:
        if self._sock is not None:
            self._sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(timeout)
            self._err_reader.join(timeout)
