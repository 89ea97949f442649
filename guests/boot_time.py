#!/usr/bin/env python3
"""Time QEMU booting the guests: OpenSBI + Linux + busybox to the shell prompt,
and OpenSBI + U-Boot to the ``=>`` prompt (wall clock, time.monotonic).

    python3 guests/boot_time.py [--runs 5] [--smp 1] [--qemu qemu-system-riscv64]

The guests must be built (python3 guests/build.py all). Each run starts QEMU,
waits for the prompt, then powers off; the median and the spread are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPENSBI = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin")
UBOOT = Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin")


def product(name: str) -> Path:
    proc = subprocess.run([sys.executable, str(HERE / "build.py"), "--print-path", name],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} is not built: run python3 guests/build.py all")
    return Path(proc.stdout.strip())


def boot(argv: list[str], steps: list[tuple[str, str | None]], timeout: float = 60.0) -> float:
    """Start argv; for each (pattern, reply) wait for pattern then send reply.

    Returns the seconds from start until the last pattern; QEMU must then exit.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin and proc.stdout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf, pos, elapsed = b"", 0, 0.0
    try:
        for i, (pattern, reply) in enumerate(steps):
            rx = re.compile(pattern.encode())
            while not (m := rx.search(buf, pos)):
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"no {pattern!r}; output:\n{buf[-2000:].decode('replace')}")
                if not sel.select(timeout=1.0):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"QEMU exited before {pattern!r}")
                buf += chunk
            pos = m.end()
            if i == len(steps) - 2:  # the prompt: the step before the power-off
                elapsed = time.monotonic() - t0
            if reply is not None:
                proc.stdin.write(reply.encode())
                proc.stdin.flush()
        proc.wait(20)
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--qemu", default="qemu-system-riscv64")
    args = ap.parse_args()
    base = [args.qemu, "-M", "virt", "-m", "256M", "-smp", str(args.smp), "-nographic",
            "-no-reboot", "-bios", str(OPENSBI)]
    linux = [*base, "-kernel", str(product("linux-riscv64")),
             "-initrd", str(product("initramfs-riscv64")), "-append", "console=ttyS0"]
    uboot = [*base, "-kernel", str(UBOOT)]
    cases = {
        "OpenSBI + Linux 6.1 + busybox -> shell prompt":
            (linux, [(r"vmforge:/# ", "poweroff -f\n"), (r"Power down", None)]),
        "OpenSBI + U-Boot -> => prompt":
            (uboot, [(r"Hit any key to stop autoboot", " "), (r"\n=> ", "poweroff\n"),
                     (r"poweroff \.\.\.", None)]),
    }
    for label, (argv, steps) in cases.items():
        times = [boot(argv, steps) for _ in range(args.runs)]
        print(f"{label}: median {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s, max {max(times):.3f} s ({args.runs} runs, "
              f"-smp {args.smp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
