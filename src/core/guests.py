"""The default guest: what ``vmforge run`` boots when it is given nothing to run.

The project's guest recipes (``make guests`` in a vmforge checkout) build a
Linux kernel and a busybox initramfs into the cache
(``${VMFORGE_CACHE:-~/.cache/vmforge}``) and record them in
``guests/default.json``::

    {"machine": "riscv-virt", "memory": "256M", "kernel": "...", "initrd": "...",
     "append": "console=ttyS0", "disk": ".../guests/disk.qcow2", "nic": "user"}

``disk`` is a qcow2 image the guest sees as ``/dev/vda``, made once (empty)
and kept: what the guest writes there stays from one ``make demo`` to the next.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vmforge.cachedir import cache_root
from vmforge.errors import VmforgeError

__all__ = ["DefaultGuest", "cache_dir", "default_guest", "manifest_path"]


def cache_dir() -> Path:
    """vmforge's cache (built guests, benchmark images): outside any repository."""
    return Path(cache_root())


def manifest_path() -> Path:
    return cache_dir() / "guests" / "default.json"


@dataclass(frozen=True)
class DefaultGuest:
    machine: str
    memory: str
    kernel: str
    initrd: str | None
    append: str
    disk: str | None = None
    nic: str | None = None      # a -nic spec ("user": QEMU's default networking)


def default_guest() -> DefaultGuest:
    """The recorded default guest, or an error that says how to build one."""
    path = manifest_path()
    how = "build it with 'make guests' in a vmforge checkout, or give -kernel"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VmforgeError(f"no default guest ({path} does not exist): {how}") from None
    except (OSError, ValueError) as exc:
        raise VmforgeError(f"{path}: unreadable default-guest record ({exc}): {how}") from None
    try:
        guest = DefaultGuest(str(data["machine"]), str(data.get("memory", "256M")),
                             str(data["kernel"]), data.get("initrd"),
                             str(data.get("append", "")), data.get("disk"), data.get("nic"))
    except (KeyError, TypeError) as exc:
        raise VmforgeError(f"{path}: missing field {exc}: {how}") from None
    for f in (guest.kernel, guest.initrd, guest.disk):
        if f is not None and not os.path.exists(f):
            raise VmforgeError(f"the default guest's {f} is gone: {how}")
    return guest


def record_default_guest(guest: DefaultGuest) -> Path:
    """Write ``guest`` as the default (atomically); returns the manifest's path."""
    for f in (guest.kernel, guest.initrd):
        if f is not None and not os.path.exists(f):
            raise VmforgeError(f"cannot record a default guest: {f} does not exist")
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(guest.__dict__, indent=2) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m vmforge.guests record --kernel K [--initrd I] ...`` (used by make)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vmforge.guests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record the default guest")
    rec.add_argument("--machine", default="riscv-virt")
    rec.add_argument("--memory", default="256M")
    rec.add_argument("--kernel", required=True)
    rec.add_argument("--initrd")
    rec.add_argument("--append", default="console=ttyS0")
    rec.add_argument("--disk", help="a qcow2 disk for the guest (made, empty, if missing)")
    rec.add_argument("--disk-size", default="1G")
    rec.add_argument("--nic", help="a -nic spec for the guest (e.g. user)")
    sub.add_parser("show", help="print the default guest")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        if args.disk and not os.path.exists(args.disk):
            from vmforge.block import parse_size
            from vmforge.block.backend import create_image

            os.makedirs(os.path.dirname(os.path.abspath(args.disk)), exist_ok=True)
            create_image("qcow2", args.disk, parse_size(args.disk_size))
        path = record_default_guest(DefaultGuest(args.machine, args.memory, args.kernel,
                                                 args.initrd, args.append,
                                                 os.path.abspath(args.disk) if args.disk
                                                 else None, args.nic))
        print(f"default guest recorded in {path}")
    else:
        print(json.dumps(default_guest().__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
