"""``vmforge run``: build a machine from QEMU-style options and run it.

The options keep QEMU's names and syntax (``-M virt,key=val``, ``-m 512``,
``-smp 2``, ``-bios``, ``-kernel``, ``-initrd``, ``-append``, ``-drive``,
``-device``, ``-netdev``, ``-serial``, ``-nographic``, ``-accel``, ``-d``), so
a QEMU command line carries over.  The exit status is the guest's (a
finisher's code), as with QEMU.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

from vmforge.accel.options import accel_thread_option
from vmforge.clock import Icount
from vmforge.config import (
    ConfigError,
    DeviceSpec,
    DriveSpec,
    MachineConfig,
    MachineProp,
    NetdevSpec,
    check_machine_props,
    parse_opts,
)
from vmforge.devspec import ChardevSpec
from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:  # the machine stack is imported when `run` runs, not for `img`
    import argparse

    from vmforge.cli.img_getopt import ArgumentAdder
    from vmforge.machine import Machine
    from vmforge.qmp import QmpAddress, QmpServer

#: the machine ``vmforge run`` builds when no -M is given
DEFAULT_MACHINE = "riscv-virt"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run a machine (QEMU-style options)", allow_abbrev=False,
                       description="Build a machine and run it. Options follow QEMU's.")
    add_run_arguments(p)


def add_run_arguments(p: ArgumentAdder) -> None:
    """``run``'s arguments, to argparse's parser or to the spec a common command line
    is read with (:mod:`vmforge.cli.run_getopt`)."""
    add_machine_options(p)
    p.add_argument("--timeout", default=None, metavar="SECONDS",
                   help="stop the guest after this much host time (exit status 124)")
    p.add_argument("-gdb", dest="gdb", metavar="tcp::PORT|tcp:127.0.0.1:PORT|unix:PATH",
                   help="wait for a gdb connection on this device (127.0.0.1 only)")
    p.add_argument("-s", dest="gdb_s", action="store_true",
                   help="shorthand for -gdb tcp::1234 (on 127.0.0.1)")
    p.add_argument("-S", dest="gdb_wait", action="store_true",
                   help="do not start the CPUs at startup (gdb's 'continue' does)")
    p.set_defaults(func=run)


def add_machine_options(p: ArgumentAdder) -> None:
    """QEMU's options, as ``vmforge run`` takes them."""
    p.add_argument("-M", "-machine", dest="machine", default=None,
                   metavar="NAME[,prop=value...]",
                   help=f"the machine (default {DEFAULT_MACHINE}); '-M help' lists them")
    p.add_argument("-m", dest="memory", metavar="SIZE", help="RAM size (MiB, or with a suffix)")
    p.add_argument("-smp", dest="smp", default="1", metavar="N", help="number of CPUs")
    p.add_argument("-bios", dest="bios", default="default",
                   help="firmware: 'default' (the machine's), 'none', or a file")
    p.add_argument("-kernel", dest="kernel", metavar="FILE")
    p.add_argument("-initrd", dest="initrd", metavar="FILE")
    p.add_argument("-append", dest="append", default="", metavar="CMDLINE")
    p.add_argument("-dtb", dest="dtb", metavar="FILE", help="use this device tree")
    p.add_argument("-drive", dest="drives", action="append", default=[], metavar="OPTS")
    p.add_argument("-blockdev", dest="blockdevs", action="append", default=[], metavar="OPTS",
                   help="a block node (driver=qcow2,node-name=N,file.driver=file,"
                        "file.filename=F, or JSON): vmforge.block.nodes")
    p.add_argument("-device", dest="devices", action="append", default=[], metavar="OPTS",
                   help="a device: '-device help' lists them, '-device NAME,help' its options")
    p.add_argument("-global", dest="globals", action="append", default=[],
                   metavar="DRIVER.PROP=VALUE", help="a property default for every such device")
    p.add_argument("-hda", dest="hda", metavar="FILE", help="the first disk (-drive file=FILE)")
    p.add_argument("-chardev", dest="chardevs", action="append", default=[],
                   metavar="stdio|null|file,id=ID[,path=P]")
    p.add_argument("-netdev", dest="netdevs", action="append", default=[],
                   metavar="user|tap|socket,id=ID[,...]")
    p.add_argument("-nic", dest="nics", action="append", default=[],
                   metavar="user|tap|socket[,model=virtio-net-device][,mac=M][,...]",
                   help="a network back-end and the NIC on it in one option")
    p.add_argument("-serial", dest="serial", action="append", default=[],
                   metavar="stdio|file:PATH|null|none")
    p.add_argument("-nographic", action="store_true", help="console on stdio (the default)")
    p.add_argument("-display", dest="display", default="none", help="only 'none'")
    p.add_argument("-accel", dest="accel", metavar="interp[,thread=multi|single]|kvm",
                   help="interp: riscv-virt runs each hart on a host thread with -smp > 1 "
                        "(thread=single: one thread, round robin)")
    p.add_argument("-enable-kvm", dest="enable_kvm", action="store_true")
    p.add_argument("-cpu", dest="cpu", metavar="qemu64|host",
                   help="the CPU model a KVM guest sees (default qemu64, as QEMU)")
    p.add_argument("-no-reboot", dest="no_reboot", action="store_true",
                   help="exit instead of resetting when the guest reboots")
    p.add_argument("-d", dest="trace", action="append", default=[], metavar="ITEMS",
                   help="trace categories, comma-separated")
    p.add_argument("-D", dest="logfile", metavar="FILE", help="write traces to FILE")
    p.add_argument("-dfilter", dest="dfilter", metavar="RANGE,...",
                   help="trace in_asm/exec/cpu only for blocks starting in these ranges "
                        "(START+SIZE, START-SIZE, START..END)")
    p.add_argument("-icount", dest="icount", metavar="[shift=]N[,sleep=on|off]",
                   help="guest time counts instructions (2**N ns each) instead of "
                        "following the host's clock; sleep=off skips idle time")
    p.add_argument("-loadvm", dest="loadvm", metavar="NAME",
                   help="start from the VM snapshot NAME (made by the monitor's savevm)")
    p.add_argument("-incoming", dest="incoming", metavar="tcp:HOST:PORT|exec:CMD|file:PATH|defer",
                   help="wait for a live migration from another vmforge on this URI")
    p.add_argument("-qmp", dest="qmp", action="append", default=[],
                   metavar="unix:PATH,server=on,wait=off|tcp:HOST:PORT,server=on,wait=off",
                   help="a QMP (QEMU Machine Protocol) server for management tools")
    p.add_argument("-mon", dest="mons", action="append", default=[],
                   metavar="chardev=ID,mode=control",
                   help="QMP on a '-chardev socket,id=ID,...,server=on'")


def apply_default_guest(args: argparse.Namespace) -> None:
    """With nothing to boot (no -M, -kernel, -bios), boot the default guest."""
    if args.machine is None and args.kernel is None and args.bios == "default":
        from vmforge.guests import default_guest

        guest = default_guest()
        args.machine = guest.machine
        args.memory = args.memory or guest.memory
        args.kernel, args.initrd = guest.kernel, args.initrd or guest.initrd
        args.append = args.append or guest.append
        if guest.disk is not None and not args.hda:
            args.drives = [f"file={guest.disk},format=qcow2", *args.drives]
        if guest.nic is not None and not args.nics and not args.netdevs:
            args.nics = [guest.nic]
    if args.machine is None:
        args.machine = DEFAULT_MACHINE


def _blockdev_drives(texts: list[str]) -> list[DriveSpec]:
    if not texts:
        return []           # (the block layer is imported when a drive is opened)
    from vmforge.block.nodes import blockdev_drives

    return blockdev_drives(texts)


def config_from_args(args: argparse.Namespace) -> MachineConfig:
    """The :class:`MachineConfig` that QEMU-style ``args`` ask for."""
    apply_default_guest(args)
    mopts = parse_opts(args.machine, implied="type")
    accel = args.accel.split(",")[0] if args.accel else None
    try:
        thread = accel_thread_option(args.accel) if args.accel else None
    except ValueError as exc:
        raise VmforgeError(str(exc)) from None
    if args.enable_kvm:
        accel = "kvm"
    if args.display not in ("none",):
        raise VmforgeError(f"-display {args.display}: vmforge has no graphics; use -nographic")
    nics = [NetdevSpec.parse_nic(text, i) for i, text in enumerate(args.nics)]
    return MachineConfig(
        machine=mopts.pop("type"),
        machine_props=mopts,
        memory=MachineConfig.parse_memory(args.memory) if args.memory else None,
        smp=MachineConfig.parse_smp(args.smp),
        bios=args.bios,
        kernel=args.kernel,
        initrd=args.initrd,
        append=args.append,
        dtb=args.dtb,
        drives=[*([DriveSpec(args.hda)] if args.hda else []),
                *(DriveSpec.parse(d) for d in args.drives),
                *_blockdev_drives(getattr(args, "blockdevs", []))],
        chardevs={c.id: c for c in map(ChardevSpec.parse, args.chardevs)},
        globals=_globals(args.globals),
        devices=[*(DeviceSpec.parse(d) for d in args.devices), *(d for _, d in nics)],
        netdevs=[*(NetdevSpec.parse(n) for n in args.netdevs), *(n for n, _ in nics)],
        serial=args.serial or ["stdio"],
        accel=accel,
        no_reboot=args.no_reboot,
        trace=[t for item in args.trace for t in item.split(",") if t],
        icount=Icount.parse(args.icount) if args.icount else None,
        extra={**({"logfile": args.logfile} if args.logfile else {}),
               **({"cpu": args.cpu} if args.cpu else {}),
               **({"accel_thread": thread} if thread else {}),
               **({"dfilter": _dfilter(args.dfilter)} if args.dfilter else {}),
               **({"loadvm": args.loadvm} if getattr(args, "loadvm", None) else {}),
               **({"incoming": args.incoming} if getattr(args, "incoming", None) else {}),
               **({"no_autostart": True} if getattr(args, "gdb_wait", False) else {})},
    )


#: ``-d`` categories: what each traces
TRACE_CATEGORIES = {
    "guest_errors": "every access to unassigned or refused MMIO (not rate-limited)",
    "plugins": "every hook call and its result (pluggy tracing)",
    "int": "every trap taken (exceptions and interrupts), in QEMU's format",
    "in_asm": "each block of guest code when first run, disassembled (QEMU's IN: records)",
    "exec": "every block run (QEMU's Trace lines; the host address is 0)",
    "cpu": "the registers before every block run (QEMU's register dump)",
    "fpu": "the F registers too in the cpu dump",
    "nochain": "accepted: exec and cpu already log every block, as QEMU does with it",
    "mmu": "each translation that fills a TLB entry (QEMU's riscv_cpu_tlb_fill lines)",
    "page": "accepted: QEMU dumps page maps in user-mode emulation only; nothing here",
}


def _dfilter(text: str) -> list[tuple[int, int]]:
    from vmforge.debug.trace import TraceError, parse_dfilter

    try:
        return parse_dfilter(text)
    except TraceError as exc:
        raise ConfigError(str(exc)) from None


def setup_tracing(config: MachineConfig) -> None:
    """Turn on the ``-d`` categories, writing to ``-D FILE`` or stderr."""
    if not config.trace and "logfile" not in config.extra:
        return                  # (the tracers' imports cost a run without -d ~25 ms)
    import logging

    from vmforge.debug.trace import CPU_CATEGORIES
    from vmforge.plugins import registry

    unknown = [t for t in config.trace if t not in TRACE_CATEGORIES]
    if unknown:
        raise VmforgeError(f"-d: unknown trace categories {', '.join(unknown)} (supported: "
                           f"{', '.join(TRACE_CATEGORIES)}; -d help describes them)")
    logfile = config.extra.get("logfile")
    try:
        out = open(logfile, "w", buffering=1) if logfile else sys.stderr  # (as QEMU)
    except OSError as exc:
        raise ConfigError(f"-D {logfile}: cannot open the log file: {exc.strerror}") from None
    if "guest_errors" in config.trace:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("vmforge.memory")
        log.addHandler(handler)
        log.propagate = False
        config.extra["bad_access_burst"] = 1 << 62
    for name, wanted in (("int", "int" in config.trace),
                         ("cpu", any(t in CPU_CATEGORIES for t in config.trace))):
        if not wanted:
            continue
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger(f"vmforge.trace.{name}")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if "plugins" in config.trace:
        pm = registry().plugin_manager
        pm.trace.root.setwriter(lambda text: out.write(text))
        pm.enable_tracing()


def parse_timeout(text: str | None) -> float | None:
    """``--timeout SECONDS``: a number of seconds, 0 or more (``inf``: none)."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"--timeout {text}: not a number of seconds") from None
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"--timeout {text}: the timeout must be 0 seconds or more")
    return None if math.isinf(seconds) else seconds


def machine_properties(cls: type[Machine]) -> Mapping[str, MachineProp]:
    """The ``-M NAME,prop=value`` properties a machine class declares (none when it
    declares no ``properties``)."""
    declared = getattr(cls, "properties", None)
    return declared if isinstance(declared, Mapping) else {}


def print_machine_help(name: str, declared: Mapping[str, MachineProp]) -> None:
    """``-M NAME,help``: the machine's properties, as QEMU lists them."""
    if not declared:
        print(f"machine {name!r} has no properties")
    for prop_name, prop in sorted(declared.items()):
        default = "" if prop.default is None else f" (default: {prop.default})"
        print(f"  {prop_name}=<{prop.type_name()}>  {prop.doc}{default}".rstrip())


def create_machine(config: MachineConfig) -> Machine:
    """Load the machine plugin ``config.machine``, check the ``-M`` properties
    against those it declares, and instantiate it."""
    from vmforge.plugins import registry

    cls = registry().load("machine", config.machine)
    check_machine_props(config.machine, machine_properties(cls), config.machine_props)
    return cls(config)


def _error_text(exc: BaseException) -> str:
    """One line for an error: an OSError names its file, as QEMU does."""
    if isinstance(exc, OSError) and not isinstance(exc, VmforgeError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _globals(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for text in items:
        MachineConfig.parse_global(text, out)
    return out


def _device_help(devices: list[str]) -> bool:
    """``-device help`` (the installed devices) or ``-device NAME,help`` (its
    properties), as QEMU prints them; True when help was asked for."""
    from vmforge.devspec import device_help
    from vmforge.plugins import registry

    for text in devices:
        if text in ("help", "?"):
            for info in registry().entries("device"):
                print(f'name "{info.name}", dist {info.dist} {info.version}')
            return True
        name, _, rest = text.partition(",")
        if rest in ("help", "?"):
            try:
                print(device_help(registry().load("device", name)))
            except VmforgeError as exc:
                print(f"vmforge run: {exc}", file=sys.stderr)
            return True
    return False


def _qmp_specs(args: argparse.Namespace, config: MachineConfig) -> list[QmpAddress]:
    """The QMP servers of ``-qmp`` and ``-mon`` (:mod:`vmforge.qmp`, ~30 ms of imports,
    is imported only when there are some)."""
    qmp, mons = getattr(args, "qmp", []), getattr(args, "mons", [])
    if not qmp and not mons:
        return []
    from vmforge.qmp import mon_qmp_spec, parse_qmp_spec

    return [*(parse_qmp_spec(text) for text in qmp),
            *(mon_qmp_spec(text, config.chardevs) for text in mons)]


def run(args: argparse.Namespace) -> int:
    from vmforge.plugins import registry

    if any(t in ("help", "?") for item in args.trace for t in item.split(",")):
        for name, text in TRACE_CATEGORIES.items():
            print(f"{name:14} {text}")
        return 0
    if args.machine in ("help", "?"):
        reg = registry()
        for info in reg.entries("machine"):
            print(f"{info.name:20} {info.dist} {info.version}")
        if not reg.entries("machine"):
            print("no machine plugins installed")
        return 0
    if args.devices and _device_help(args.devices):
        return 0
    try:
        timeout = parse_timeout(args.timeout)
        config = config_from_args(args)
        if config.machine_props.get("help") == "on":
            print_machine_help(config.machine, machine_properties(
                registry().load("machine", config.machine)))
            return 0
        setup_tracing(config)
        qmp_specs = _qmp_specs(args, config)
        machine = create_machine(config)
    except (VmforgeError, ValueError, OSError) as exc:
        print(f"vmforge run: {_error_text(exc)}", file=sys.stderr)
        return 1
    built = False
    qmp_servers: list[QmpServer] = []
    try:
        # building reads the files (-kernel, -dtb...) and maps RAM: its errors are
        # the command line's, reported before anything runs
        if "incoming" in config.extra:      # images unlocked, paused in inmigrate
            from vmforge.migration.live import prepare_incoming

            prepare_incoming(machine, config.extra["incoming"])
        machine.realize()
        for spec in qmp_specs:
            from vmforge.qmp import QmpServer

            qmp_servers.append(QmpServer(machine, spec).start())
            if spec.wait:   # QEMU's wait=on: the guest starts when a client connects
                print(f"vmforge run: waiting for a QMP connection on "
                      f"{spec.path or f'{spec.host}:{spec.port}'}", file=sys.stderr)
            while spec.wait and not qmp_servers[-1].wait_for_client(0.5):
                pass
        if "loadvm" in config.extra:        # QEMU's -loadvm: before the guest runs
            from vmforge.migration.snapshot import loadvm

            loadvm(machine, config.extra["loadvm"])
        built = True
        gdb = getattr(args, "gdb", None)
        shorthand, wait = getattr(args, "gdb_s", False), getattr(args, "gdb_wait", False)
        if gdb is not None or shorthand or wait:    # (the stub's imports: ~3 ms)
            from vmforge.debug import start_gdbstub

            start_gdbstub(machine, gdb, shorthand=shorthand, wait=wait)
        return machine.run(timeout=timeout)
    except (VmforgeError, OSError) as exc:
        print(f"vmforge run: {_error_text(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        if built:
            raise  # a bug while running: main() reports it as an internal error
        print(f"vmforge run: {_error_text(exc)}", file=sys.stderr)
        return 1
    finally:
        for server in qmp_servers:
            server.close()      # the last events (SHUTDOWN) are sent first
        machine.close()
