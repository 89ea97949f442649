"""The base of every machine (board): memory map, devices, CPUs, the run loop.

A machine plugin subclasses :class:`Machine`, registers it under the entry-point
group ``vmforge.machine``, and implements two methods:

- :meth:`Machine.build`: place RAM, devices and CPUs (a table of addresses).
- :meth:`Machine.run_cpus`: run every CPU for one slice on its accelerator;
  return True when all of them are halted waiting for an interrupt.

The base class owns what every board shares: the address space, the guest
clock and its timers, device realize/reset, thread-safe shutdown and reset
requests (from devices such as a test finisher, or from another thread), the
run loop that sleeps while CPUs are halted, and the lifecycle hooks.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable

from vmforge.chardev import CharBackend, chardev_from_spec
from vmforge.clock import TimerQueue, VirtualClock
from vmforge.config import MachineConfig, MachineProp, check_machine_props
from vmforge.device import Device, DeviceError
from vmforge.errors import VmforgeError
from vmforge.memory import AddressSpace, RamRegion

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Machine", "MachineError", "ShutdownReason"]


class MachineError(VmforgeError):
    """A machine could not be built or run as asked."""


class ShutdownReason:
    """Why a machine stopped (the ``reason`` of the shutdown hook)."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    FAIL = "fail"
    USER = "user"
    TIMEOUT = "timeout"
    ERROR = "error"


class Machine:
    """Base class of machines.  One instance is one guest."""

    #: the registry name (``-M NAME``)
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_memory: ClassVar[int] = 128 << 20
    max_cpus: ClassVar[int] = 1
    #: accelerators the board supports, the default first
    accels: ClassVar[tuple[str, ...]] = ("interp",)
    #: the ``-M NAME,prop=value`` properties it takes (checked when it is made;
    #: their values are in :attr:`props`)
    properties: ClassVar[dict[str, MachineProp]] = {}

    def __init__(self, config: MachineConfig | None = None, **overrides: Any) -> None:
        config = config or MachineConfig(machine=self.name)
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise MachineError(f"machine {self.name!r}: unknown option {key!r}")
            setattr(config, key, value)
        self.config = config
        try:
            self.props = check_machine_props(self.name, type(self).properties,
                                             config.machine_props)
        except ValueError as exc:
            raise MachineError(str(exc)) from None
        self.memory_size = config.memory or self.default_memory
        if not 1 <= config.smp <= self.max_cpus:
            raise MachineError(f"machine {self.name!r} supports 1 to {self.max_cpus} CPUs, "
                               f"not {config.smp}")
        self.accel = config.accel or self.accels[0]
        if self.accel not in self.accels:
            raise MachineError(f"machine {self.name!r} runs on {', '.join(self.accels)}, "
                               f"not {self.accel!r}")
        self.space = AddressSpace(name=self.name or type(self).__name__)
        if "bad_access_burst" in config.extra:  # -d guest_errors
            self.space.on_bad_access.burst = config.extra["bad_access_burst"]
        self.clock = VirtualClock()
        self.timers = TimerQueue(self.clock)
        self.devices: list[Device] = []
        self.cpus: list[Any] = []
        self.built = False
        self.exit_status: int | None = None
        self.shutdown_reason: str | None = None
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._reset_requested = False
        self._soon: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque())
        self._chardevs: dict[int, CharBackend | None] = {}
        self.monitor: Any = None
        #: the GDB stub (``-gdb``, ``-s``, the monitor's ``gdbserver``), if any
        self.gdbstub: Any = None
        self._paused = False
        self._own_chardevs: list[CharBackend] = []
        self._thread: threading.Thread | None = None
        #: the thread in :meth:`run` (None when the run loop is not running)
        self.loop_thread: threading.Thread | None = None
        #: QEMU's run state while a migration holds the machine (``inmigrate``,
        #: ``finish-migrate``, ``postmigrate``), else None (vmforge.migration.live)
        self.migration_runstate: str | None = None
        self._error: BaseException | None = None
        self._clock_origin_seen: int | None = None
        #: held while device models run on the machine's thread (pending calls,
        #: timers); machines whose CPUs run on threads of their own (KVM) make it
        #: a real lock and take it for every device access (QEMU's big lock)
        self.big_lock: Any = contextlib.nullcontext()
        #: network back-ends by ``-netdev`` id (:meth:`open_netdevs`)
        self.netdevs: dict[str, Any] = {}
        #: ``fn(event, data)`` on each run-state change, from the thread making it:
        #: "STOP", "RESUME", "RESET" (data: reason), "SHUTDOWN" (data: reason), and
        #: "EXITED" when the run loop has returned; QMP's events come from here
        self.state_listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- assembly (from build) ----------------------------------------------------------

    def build(self) -> None:
        """Place RAM, devices and CPUs.  Subclasses implement it."""
        raise NotImplementedError(f"machine {self.name!r} has no build()")

    def refuse_unsupported(self, *options: str) -> None:
        """Raise a clear error for the given config options (``drives``,
        ``devices``, ``netdevs``) when the command line used them: a board that
        cannot honour an option says so rather than ignoring it."""
        flags = {"drives": "-drive", "devices": "-device", "netdevs": "-netdev"}
        for option in options:
            if getattr(self.config, option):
                raise MachineError(f"machine {self.name!r} does not support "
                                   f"{flags.get(option, option)} yet")

    def open_netdevs(self) -> None:
        """Open the ``-netdev`` back-ends (``config.netdevs``) into :attr:`netdevs`,
        where NICs find theirs by id; they are closed with the machine."""
        if not self.config.netdevs:
            return              # (vmforge.net imports its back-ends' registry)
        from vmforge.net import create_netdev

        for spec in self.config.netdevs:
            if spec.id in self.netdevs:
                raise MachineError(f"-netdev id={spec.id} is given twice")
            try:
                self.netdevs[spec.id] = create_netdev(spec, self)
            except ValueError as exc:
                raise MachineError(str(exc)) from None

    def add_ram(self, base: int, size: int, name: str = "ram",
                readonly: bool = False) -> RamRegion:
        return self.space.add_ram(base, size, name, readonly)

    def add_device(self, device: Device, base: int | None = None) -> Device:
        """Realize ``device`` on this machine and map its MMIO window at ``base``."""
        device.realize(self)
        if base is not None:
            device.map(self.space, base)
        self.devices.append(device)
        return device

    def create_device(self, driver: str, **props: Any) -> Device:
        """A device from the ``vmforge.device`` plugins, by name, with properties
        (QEMU's ``-global DRIVER.PROP=VALUE`` defaults from ``config.globals``
        first, ``props`` over them)."""
        from vmforge.plugins import registry

        cls = registry().load("device", driver)
        merged = {**self.config.globals.get(driver, {}), **props}
        try:
            return cls(**merged)
        except DeviceError:
            raise
        except (TypeError, ValueError) as exc:
            raise DeviceError(f"device {driver!r}: {exc}") from exc

    # -- life cycle ------------------------------------------------------------------------

    def realize(self) -> None:
        """Build the machine once and put it in its power-on state."""
        if self.built:
            return
        self.build()
        self.built = True
        self._hooks().vmforge_machine_created(machine=self)
        self.reset("power-on")

    def reset(self, reason: str = "user") -> None:
        """Reset every device and CPU; after power-on, load the images again
        (firmware, kernel, initrd, device tree: QEMU's ROM blobs are copied
        back on every system reset, so a guest that reboots boots afresh)."""
        for device in self.devices:
            device.reset()
        if reason != "power-on":
            self.reload_images()
        self.reset_cpus()
        self._hooks().vmforge_machine_reset(machine=self, reason=reason)
        if reason != "power-on":
            self._state_changed("RESET", reason=reason)

    def reload_images(self) -> None:
        """Copy the boot images into memory again (subclasses that load any)."""

    def reset_cpus(self) -> None:
        """Put the CPUs at their reset vector (subclasses implement)."""

    def close(self) -> None:
        """Release host resources held by devices and the consoles it opened."""
        for device in reversed(self.devices):
            if device.realized:
                device.unrealize()
        for chardev in self._own_chardevs:
            chardev.close()
        self._own_chardevs.clear()
        for backend in self.netdevs.values():
            backend.close()
        self.netdevs.clear()

    def serial_chardev(self, index: int = 0) -> CharBackend | None:
        """The host back-end of serial port ``index`` (``-serial``), made once.

        ``config.serial[index]`` is a QEMU spec (``stdio``, ``file:PATH``,
        ``null``, ``none``) or a :class:`~vmforge.chardev.CharBackend` a script
        made (a ``BufferChar`` to read and type on the console).  Input is
        delivered on the machine's thread; Ctrl-A X on stdio stops the machine.
        """
        if index not in self._chardevs:
            specs = self.config.serial
            spec = specs[index] if index < len(specs) else "none"
            if isinstance(spec, CharBackend):
                chardev: CharBackend | None = spec
            else:
                chardev = chardev_from_spec(
                    spec, on_quit=lambda: self.request_shutdown(ShutdownReason.USER, 0),
                    on_monitor=lambda: self.call_soon(self._toggle_monitor, index))
                if chardev is not None:
                    self._own_chardevs.append(chardev)
            if chardev is not None:
                chardev.dispatch = self.call_soon
            self._chardevs[index] = chardev
        return self._chardevs[index]

    # -- requests (thread-safe: devices, I/O threads, the user) --------------------------

    def request_shutdown(self, reason: str, status: int = 0) -> None:
        """Stop the run loop with ``status`` as the exit status (first request wins)."""
        with self._lock:
            first = self.shutdown_reason is None
            if first:
                self.shutdown_reason = reason
                self.exit_status = status
        if first and reason == ShutdownReason.FAIL:
            self._hooks().vmforge_guest_panic(machine=self, info={"status": status})
        if first:
            self._state_changed("SHUTDOWN", reason=reason)
        self.kick()

    def _state_changed(self, event: str, **data: Any) -> None:
        for listener in list(self.state_listeners):
            listener(event, data)

    def _toggle_monitor(self, index: int) -> None:
        from vmforge.monitor import Monitor

        chardev = self._chardevs.get(index)
        if chardev is None:
            return
        if self.monitor is None:
            self.monitor = Monitor(self, chardev)
        self.monitor.toggle()

    def pause(self) -> None:
        """Stop running CPUs (the monitor's ``stop``); guest time stands still."""
        was_paused, self._paused = self._paused, True
        self.kick()
        if not was_paused:
            self._state_changed("STOP")

    def resume(self) -> None:
        was_paused, self._paused = self._paused, False
        self.kick()
        if was_paused:
            self._state_changed("RESUME")

    @property
    def paused(self) -> bool:
        return self._paused

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the machine's thread, between CPU slices.

        The way I/O threads (console input, network, block completions) hand
        work to device models, so device and interrupt state is only touched by
        the machine's thread.  Safe from any thread; wakes a halted machine.
        """
        self._soon.append((fn, args))  # deque.append is atomic
        self.kick()

    def run_pending_calls(self) -> int:
        """Run the callbacks queued by :meth:`call_soon`; how many ran."""
        n = 0
        while self._soon:
            fn, args = self._soon.popleft()
            fn(*args)
            n += 1
        return n

    def request_reset(self) -> None:
        """Reset the machine soon (a guest's reboot); with ``-no-reboot`` end it
        instead, with status 0, as QEMU does."""
        if self.config.no_reboot:
            self.request_shutdown(ShutdownReason.REBOOT, 0)
            return
        self._reset_requested = True
        self.kick()

    def kick(self) -> None:
        """Wake the run loop (an interrupt from an I/O thread, input, a request)."""
        self._wakeup.set()
        self.kick_cpus()

    def kick_cpus(self) -> None:
        """Make running CPUs leave their slice soon (subclasses implement)."""

    @property
    def stopped(self) -> bool:
        return self.shutdown_reason is not None

    # -- the run loop ------------------------------------------------------------------------

    def run_cpus(self) -> bool:
        """Run each CPU for a slice; True when all are halted waiting for an interrupt."""
        raise NotImplementedError(f"machine {self.name!r} has no run_cpus()")

    def run(self, timeout: float | None = None) -> int:
        """Run until shutdown (or ``timeout`` seconds of host time); the exit status."""
        self.realize()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.loop_thread = threading.current_thread()   # call_soon's work runs here
        self.clock.resume()
        try:
            while not self.stopped:
                if self._reset_requested:
                    self._reset_requested = False
                    self.reset("guest")
                with self.big_lock:
                    self.run_pending_calls()
                if self._paused:
                    if self.clock.running:
                        self.clock.pause()
                        self._clock_origin_seen = None
                        self.clock_paused()
                    self._sleep_until_event(deadline, timers=False)
                    if deadline is not None and time.monotonic() >= deadline:
                        self.request_shutdown(ShutdownReason.TIMEOUT, 124)  # paused too
                        break
                    continue
                self._resume_clock()
                with self.big_lock:
                    self.timers.run_due()
                if self.stopped:
                    break
                halted = self.run_cpus()
                if deadline is not None and time.monotonic() >= deadline:
                    self.request_shutdown(ShutdownReason.TIMEOUT, 124)
                    break
                if halted and not self.stopped and not self._soon:
                    self._hooks().vmforge_machine_halt(machine=self)
                    slept = time.monotonic_ns()
                    self._sleep_until_event(deadline, cpu_delay=self.cpu_idle_delay_ns())
                    self.cpu_idle_passed(time.monotonic_ns() - slept)
        except BaseException as exc:
            self.request_shutdown(ShutdownReason.ERROR, 1)
            self._error = exc
            raise
        finally:
            self.loop_thread = None
            self.clock.pause()
            self._hooks().vmforge_machine_shutdown(
                machine=self, reason=self.shutdown_reason, status=self.exit_status)
            self._state_changed("EXITED", reason=self.shutdown_reason)
        return int(self.exit_status or 0)

    def _resume_clock(self) -> None:
        self.clock.resume()
        origin = self.clock.origin_ns()
        if origin is not None and origin != self._clock_origin_seen:
            self._clock_origin_seen = origin
            self.clock_resumed(origin)

    def clock_resumed(self, origin_ns: int) -> None:
        """The machine's clock (re)started: guest ns = ``time.monotonic_ns()`` -
        ``origin_ns`` from now on.  CPUs that read the host clock themselves
        (subclasses) move their origin, so paused time is not seen."""

    def clock_paused(self) -> None:
        """The machine's clock stopped (a pause): CPUs reading the host clock
        themselves stop their time too (subclasses)."""

    def cpu_idle_delay_ns(self) -> int | None:
        """While every CPU is halted: guest ns until a CPU-internal timer fires
        (None: none armed).  Subclasses whose CPUs keep their own timers say."""
        return None

    def cpu_idle_passed(self, ns: int) -> None:
        """``ns`` of host time passed while every CPU was halted (for CPUs whose
        time counts instructions and waits in host time when idle)."""

    def _sleep_until_event(self, deadline: float | None, timers: bool = True,
                           cpu_delay: int | None = None) -> None:
        nxt = self.timers.next_deadline() if timers else None
        waits = []
        if nxt is not None:
            waits.append(max(0, nxt - self.clock.now_ns()) / 1e9)
        if cpu_delay is not None:
            waits.append(max(0, cpu_delay) / 1e9)
        if deadline is not None:
            waits.append(max(0.0, deadline - time.monotonic()))
        self._wakeup.wait(min(waits) if waits else 0.1)
        self._wakeup.clear()

    # -- running in the background (scripts, tests) --------------------------------------

    def start(self) -> threading.Thread:
        """Run the machine on a thread of its own; see :meth:`wait` and :meth:`stop`.
        When it stops it closes itself (:meth:`close`: disk images unlocked)."""
        if self._thread is not None:
            raise MachineError(f"machine {self.name!r} is already started")
        self.realize()

        def target() -> None:
            try:
                self.run()
            except BaseException:  # kept in self._error, raised again by wait()
                pass
            finally:
                self.close()    # images unlocked, back-ends closed: the VM is over

        self._thread = threading.Thread(target=target, name=f"vmforge-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for a started machine to stop; its exit status (None: still running)."""
        if self._thread is None:
            raise MachineError("the machine was not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return int(self.exit_status or 0)

    def stop(self, timeout: float | None = 10.0) -> int | None:
        """Ask a started machine to stop and wait for it."""
        self.request_shutdown(ShutdownReason.USER, 0)
        return self.wait(timeout)

    @staticmethod
    def _hooks() -> Any:
        from vmforge.plugins import registry

        return registry().hook
