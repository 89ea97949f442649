"""Fixtures for booting vmforge's test guests (guests/build.py) on a console.

``console_factory(argv)`` spawns a process whose stdin/stdout are its serial
console (pipes), with ``expect``/``sendline``/``command`` helpers; ``guest_products``
finds the built guests (or builds them when VMFORGE_BUILD_GUESTS=1, else skips);
``riscv_firmware`` finds Debian's prebuilt OpenSBI and U-Boot.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from vmforge.testing.oracles import oracle_missing, require_files, require_program

ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = ROOT / "guests" / "build.py"
GUEST_NAMES = ("linux-riscv64", "busybox-riscv64", "initramfs-riscv64")
BUILD_HINT = ("build them with `python3 guests/build.py all` (about 10 minutes, as root "
              "to install Debian packages), or run the tests with VMFORGE_BUILD_GUESTS=1")


class ConsoleTimeout(AssertionError):
    """The console did not print what was expected in time."""


class Console:
    """A child process driven through its stdin/stdout like a serial console.

    All output is kept in ``transcript``; ``expect`` searches from the end of the
    previous match, so each pattern only sees output that came after it.
    """

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.argv = list(argv)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, bufsize=0)
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self.pos = 0
        self._log = log_path.open("wb") if log_path else None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += chunk
                if self._log:
                    self._log.write(chunk)
                    self._log.flush()
                self._cond.notify_all()

    @property
    def transcript(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace")

    def tail(self, n: int = 3000) -> str:
        return self.transcript[-n:]

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """Wait until ``pattern`` appears after the previous match; return the match."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._buf.decode("utf-8", "replace")
                m = rx.search(text, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "the process ended" if self._eof else f"{timeout:.0f} s passed"
                    raise ConsoleTimeout(f"{why} before {rx.pattern!r} appeared; "
                                         f"console output so far:\n{text[-3000:]}")
                self._cond.wait(min(left, 0.5))

    def send(self, data: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def sendline(self, line: str = "") -> None:
        self.send(line + "\n")

    def command(self, line: str, prompt: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run a shell command; return (exit status, output), then wait for ``prompt``.

        The end marker is printed as ``@@END-<status>@@``; the echoed command line
        shows ``$?`` instead, so the echo never matches the marker.
        """
        self.sendline(f'{line}; echo "@@END-$?@@"')
        echo = self.expect(r'@@END-\$\?@@"\r*\n', timeout)
        m = self.expect(r"@@END-(\d+)@@", timeout)
        output = self.transcript[echo.end():m.start()]
        self.expect(prompt, timeout)
        return int(m.group(1)), re.sub(r"\r+\n", "\n", output)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; return its exit status."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise ConsoleTimeout(f"process still running after {timeout} s; "
                                 f"console output:\n{self.tail()}") from e
        self._reader.join(5)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()
        if self._log:
            self._log.close()
            self._log = None


@pytest.fixture
def console_factory(tmp_path: Path) -> Iterator[Callable[..., Console]]:
    """``console_factory(argv)`` -> Console; every console is killed at teardown.

    Each console's output is also written to ``tmp_path/console-N.log``.
    """
    consoles: list[Console] = []

    def spawn(argv: Sequence[str], **kw: object) -> Console:
        log_path = tmp_path / f"console-{len(consoles)}.log"
        c = Console(argv, log_path=log_path, **kw)  # type: ignore[arg-type]
        consoles.append(c)
        return c

    yield spawn
    for c in consoles:
        c.close()


def _print_path(name: str) -> tuple[bool, Path]:
    proc = subprocess.run([sys.executable, str(BUILD_PY), "--print-path", name],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0, Path(proc.stdout.strip())


@pytest.fixture(scope="session")
def guest_products() -> dict[str, Path]:
    """Main file of each guest product: {'linux-riscv64': .../Image, ...}."""
    found = {name: _print_path(name) for name in GUEST_NAMES}
    missing = [n for n, (ok, _) in found.items() if not ok]
    if missing and os.environ.get("VMFORGE_BUILD_GUESTS") == "1":
        subprocess.run([sys.executable, str(BUILD_PY), *missing], check=True)
        found = {name: _print_path(name) for name in GUEST_NAMES}
        missing = [n for n, (ok, _) in found.items() if not ok]
        assert not missing, f"guests/build.py did not produce {missing}"
    if missing:
        oracle_missing(f"guest not built: {', '.join(missing)}; {BUILD_HINT}")
    return {name: path for name, (_, path) in found.items()}


@pytest.fixture(scope="session")
def qemu_riscv64() -> str:
    return require_program("qemu-system-riscv64", "qemu-system-misc")


@pytest.fixture(scope="session")
def riscv_firmware() -> dict[str, Path]:
    """Debian's prebuilt firmware: 'opensbi' (fw_jump.bin) and 'u-boot' (S-mode)."""
    fw = {
        "opensbi": Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin"),
        "u-boot": Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"),
    }
    require_files(fw.values(), "firmware (apt-get install opensbi u-boot-qemu)")
    return fw


@pytest.fixture
def virtio_disk(tmp_path: Path) -> Path:
    """A 16 MiB raw disk image (sparse, zeroes) for a virtio-blk device."""
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(16 << 20)
    return disk
