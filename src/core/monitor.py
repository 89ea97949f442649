"""A small human monitor, as QEMU's: Ctrl-A C on a stdio console switches to it.

While it is active the console's input goes to the monitor; Ctrl-A C again
returns to the guest.  Commands run on the machine's thread, between slices.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmforge.chardev import CharBackend
from vmforge.errors import GuestMemoryError, VmforgeError

if TYPE_CHECKING:
    from vmforge.machine import Machine

__all__ = ["Monitor"]

PROMPT = b"(vmforge) "
BANNER = b"\r\nvmforge monitor - type 'help' for more information, Ctrl-A C to go back\r\n"
ABI_NAMES = ("zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
             "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6").split()


class Monitor:
    """Line-editing command interpreter attached to a machine's console."""

    def __init__(self, machine: Machine, chardev: CharBackend) -> None:
        self.machine = machine
        self.chardev = chardev
        self.active = False
        self._line = bytearray()
        self._guest: Any = None
        self.commands: dict[str, tuple[Callable[[list[str]], str], str]] = {
            "help": (self._help, "help -- list the commands"),
            "info": (self._info, "info registers|cpus|mtree|devices|block|block-jobs|"
                                 "network|status|virtio -- show machine state"),
            "xp": (self._xp, "xp /Nx ADDR -- N 32-bit words of guest physical memory"),
            "stop": (self._stop, "stop -- pause the guest"),
            "cont": (self._cont, "cont / c -- resume the guest"),
            "c": (self._cont, ""),
            "system_reset": (self._reset, "system_reset -- reset the machine"),
            "gdbserver": (self._gdbserver, "gdbserver [tcp::PORT|unix:PATH|none] -- start "
                                           "a GDB stub (default tcp::1234), or stop it"),
            "savevm": (self._savevm, "savevm [tag] -- save the whole VM in the disks' "
                                     "internal snapshots (qcow2)"),
            "loadvm": (self._loadvm, "loadvm tag -- restore a VM snapshot"),
            "delvm": (self._delvm, "delvm tag -- delete a VM snapshot from the disks"),
            "migrate": (self._migrate, "migrate [-d] uri -- migrate the VM to uri "
                                       "(tcp:HOST:PORT, exec:CMD, file:PATH)"),
            "migrate_cancel": (lambda args: self._migrate(args, cancel=True), ""),
            **self._nbd_commands(),
            "quit": (self._quit, "quit / q -- stop vmforge"),
            "q": (self._quit, ""),
        }

    # -- switching (Ctrl-A C) -------------------------------------------------------

    def toggle(self) -> None:
        """Switch the console between the guest and the monitor."""
        if not self.active:
            self._guest = self.chardev.frontend
            self.active = True
            self.chardev.attach(self)
            self.chardev.write(BANNER + PROMPT)
        else:
            self.active = False
            self._line.clear()
            self.chardev.write(b"\r\n")
            self.chardev.attach(self._guest)

    # -- input (CharFrontend) ----------------------------------------------------------

    def can_receive(self) -> int:
        return 4096

    def receive(self, data: bytes) -> None:
        for byte in data:
            if byte in (10, 13):
                line = self._line.decode(errors="replace").strip()
                self._line.clear()
                self.chardev.write(b"\r\n")
                out = self.execute(line) if line else ""
                if out:
                    self.chardev.write(out.rstrip("\n").replace("\n", "\r\n").encode() + b"\r\n")
                if self.active:
                    self.chardev.write(PROMPT)
            elif byte in (8, 127):
                if self._line:
                    self._line.pop()
                    self.chardev.write(b"\b \b")
            elif 32 <= byte < 127:
                self._line.append(byte)
                self.chardev.write(bytes([byte]))

    # -- commands ------------------------------------------------------------------------

    def execute(self, line: str) -> str:
        """Run one command line; returns its output."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return f"syntax error: {exc}"
        if not words:
            return ""
        entry = self.commands.get(words[0])
        if entry is None:
            return f"unknown command: '{words[0]}' (try 'help')"
        try:
            return entry[0](words[1:])
        except (ValueError, IndexError, GuestMemoryError) as exc:
            return f"{words[0]}: {exc}"

    def _help(self, args: list[str]) -> str:
        return "\n".join(text for _fn, text in self.commands.values() if text)

    def _info(self, args: list[str]) -> str:
        what = args[0] if args else ""
        m = self.machine
        own = getattr(m, "monitor_info", None)      # what a machine shows itself
        text = own(what) if own is not None else None
        if text is not None:
            return str(text)
        if what == "snapshots":
            return self._snapshots("info", [])
        if what == "migrate":
            from vmforge.qmp.migration import hmp_info_migrate

            return hmp_info_migrate(m)
        if what == "mtree":
            return m.space.describe()
        if what in ("devices", "qtree"):
            return "\n".join(f"{type(d).__name__:20} {d.name:14} "
                             + (f"@ {d.base:#x}" if d.base is not None else "")
                             for d in m.devices)
        if what == "cpus":
            halted = getattr(getattr(m, "cluster", None), "halted", [False] * len(m.cpus))
            return "\n".join(f"{'*' if i == 0 else ' '} CPU #{i}: pc={cpu.pc:#018x}"
                             + (" (halted)" if halted[i] else "")
                             for i, cpu in enumerate(m.cpus))
        if what == "registers":
            return "\n\n".join(_cpu_state(i, cpu) for i, cpu in enumerate(m.cpus))
        if what == "block":
            return "\n".join(_block_line(n, dev) for n, dev in _virtio_devices(m)
                             if hasattr(dev, "backend")) or "no block devices"
        if what == "block-jobs":
            from vmforge.qmp.block_jobs import hmp_block_jobs
            return hmp_block_jobs(m)
        if what == "virtio":
            return "\n".join(_virtio_lines(n, dev) for n, dev in _virtio_devices(m)) \
                or "no virtio devices"
        if what == "network":
            return _network_lines(m)
        if what == "status":                 # QEMU's words
            return "VM status: " + ("paused" if m.paused else "running")
        return "info registers|cpus|mtree|devices|block|block-jobs|network|status|virtio"

    def _xp(self, args: list[str]) -> str:
        fmt, addr_text = (args[0], args[1]) if args[0].startswith("/") else ("/1x", args[0])
        count = int(fmt[1:].rstrip("xwd") or "1")
        addr = int(addr_text, 0)
        words = [self.machine.space.memory.read_u32(addr + 4 * i) for i in range(min(count, 256))]
        return "\n".join(f"{addr + 16 * r:016x}: " + " ".join(f"0x{w:08x}" for w in
                                                           words[4 * r: 4 * r + 4])
                         for r in range((len(words) + 3) // 4))

    def _stop(self, args: list[str]) -> str:
        self.machine.pause()
        return ""

    def _cont(self, args: list[str]) -> str:
        self.machine.resume()
        return ""

    def _reset(self, args: list[str]) -> str:
        self.machine.request_reset()
        return ""

    def _gdbserver(self, args: list[str]) -> str:
        """QEMU's HMP ``gdbserver``: a new stub replaces the machine's old one."""
        from vmforge.debug import DEFAULT_GDB_DEV, start_gdbstub

        dev = args[0] if args else DEFAULT_GDB_DEV
        old = self.machine.gdbstub
        if old is not None:
            old.close()
            self.machine.gdbstub = None
        if dev == "none":
            return "Disabled gdbserver"
        try:
            start_gdbstub(self.machine, dev)
        except (VmforgeError, OSError):
            return f"Could not open gdbserver on device '{dev}'"
        return f"Waiting for gdb connection on device '{dev}'"

    def _savevm(self, args: list[str]) -> str:
        return self._snapshots("savevm", args)

    def _loadvm(self, args: list[str]) -> str:
        return self._snapshots("loadvm", args)

    def _delvm(self, args: list[str]) -> str:
        return self._snapshots("delvm", args)

    def _snapshots(self, command: str, args: list[str]) -> str:
        """savevm/loadvm/delvm/info snapshots (vmforge.migration.snapshot); errors
        as QEMU's monitor prints them."""
        from vmforge.migration import snapshot

        if command in ("loadvm", "delvm") and not args:
            return f"{command}: missing argument 'name' (usage: {command} tag)"
        try:
            if command == "info":
                return snapshot.info_snapshots(self.machine)
            if command == "savevm":
                snapshot.savevm(self.machine, args[0] if args else None)
            elif command == "loadvm":
                snapshot.loadvm(self.machine, args[0])
            else:
                snapshot.delvm(self.machine, args[0])
        except VmforgeError as exc:     # (QEMU's info snapshots reports without "Error:")
            return str(exc) if command == "info" else f"Error: {exc}"
        return ""

    def _migrate(self, args: list[str], cancel: bool = False) -> str:
        from vmforge.qmp import migration

        if cancel:
            return migration.hmp_migrate_cancel(self.machine, [])
        return migration.hmp_migrate(self.machine, args)

    def _nbd_commands(self) -> dict[str, tuple[Callable[[list[str]], str], str]]:
        import functools

        from vmforge.qmp.nbd import HMP_USAGE, hmp_nbd

        return {name: (functools.partial(hmp_nbd, self.machine, name), text)
                for name, text in HMP_USAGE.items()}

    def _quit(self, args: list[str]) -> str:
        self.machine.request_shutdown("user", 0)
        return ""


def _cpu_state(index: int, cpu: Any) -> str:
    """Registers of one CPU, as ``info registers`` prints them."""
    lines = [f"CPU#{index}", f" pc       {cpu.pc:016x}"]
    if hasattr(cpu, "priv"):
        lines.append(f" priv     {'USxM'[cpu.priv]}")
    for name in ("mstatus", "mcause", "mepc", "mtval", "satp", "scause", "sepc", "stval",
                 "mip", "mie"):
        try:
            lines.append(f" {name:8} {cpu.csr(name):016x}")
        except (AttributeError, KeyError):
            pass
    if hasattr(cpu, "x"):
        regs = list(cpu.x)
        for r in range(0, 32, 4):
            lines.append(" " + " ".join(f"x{i}/{ABI_NAMES[i]:<4} {regs[i]:016x}"
                                        for i in range(r, r + 4)))
    return "\n".join(lines)


def _virtio_devices(machine: Machine) -> list[tuple[str, Any]]:
    """(where, device) of every virtio device behind a transport on ``machine``."""
    out = []
    for transport in machine.devices:
        dev = getattr(transport, "dev", None)     # the VirtioDevice behind a transport
        if dev is not None and hasattr(dev, "queues"):
            where = f"{transport.name}@{transport.base:#x}" if transport.base is not None \
                else transport.name
            out.append((where, dev))
    return out


def _block_line(where: str, dev: Any) -> str:
    backend = dev.backend
    ro = " (read-only)" if dev.readonly or backend.readonly else ""
    return (f"{where}: {backend.filename} ({backend.format}, {backend.size} bytes){ro}"
            f"\n    stats: {dev.statistics()}")


def _virtio_lines(where: str, dev: Any) -> str:
    lines = [f"{where}: {dev.name} status={dev.status:#x} features={dev.driver_features:#x}"
             + (" NEEDS_RESET" if getattr(dev, "broken", False) else "")]
    for q in dev.queues:
        ring = q.ring
        state = (f"last_avail={ring.last_avail} used_idx={ring.used_idx}" if ring is not None
                 else "not enabled")
        lines.append(f"    queue {q.index}: size={q.size} {state} inflight={len(q.inflight)}")
    lines.append(f"    stats: {dev.statistics()}")
    return "\n".join(lines)


def _network_lines(machine: Machine) -> str:
    """QEMU's ``info network``: each NIC with its MAC and link, and its back-end."""
    lines = []
    used = set()
    for where, dev in _virtio_devices(machine):
        mac = getattr(dev, "macaddr", None)
        if mac is None:
            continue
        backend = getattr(dev, "backend", None)
        link = "up" if getattr(dev, "link_up", True) else "down"
        lines.append(f"{dev.name} ({where}): macaddr={':'.join(f'{b:02x}' for b in mac)} "
                     f"link={link}")
        if backend is not None:
            used.add(id(backend))
            lines.append(f" \\ {backend.id}: type={backend.type}")
    for ident, backend in getattr(machine, "netdevs", {}).items():
        if id(backend) not in used:
            lines.append(f"{ident}: type={backend.type} (no NIC)")
    return "\n".join(lines) or "no network devices"
