"""The Machine base: build, reset, run loop, timers, shutdown; ``vmforge run``."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vmforge.clock import TimerQueue, VirtualClock
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig, parse_opts
from vmforge.device import Device
from vmforge.machine import Machine, MachineError


class Lamp(Device):
    name = "lamp"
    mmio_size = 0x10

    def __init__(self, **props) -> None:
        super().__init__(**props)
        self.resets = 0
        self.value = 0

    def reset(self) -> None:
        self.resets += 1
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value


class Spinner(Machine):
    """A CPU that writes its step count to the lamp; stops at ``steps``."""

    name = "spinner"
    max_cpus = 4

    def build(self) -> None:
        self.add_ram(0x8000_0000, self.memory_size)
        self.lamp = self.add_device(Lamp(), 0x1000)
        self.steps = 0

    def reset_cpus(self) -> None:
        self.steps = 0

    def run_cpus(self) -> bool:
        self.steps += 1
        self.space.write(0x1000, 4, self.steps)
        if self.steps == 100:
            self.request_shutdown("poweroff", 7)
        return False


class Sleeper(Machine):
    """All CPUs halted; a guest timer wakes the machine and powers it off."""

    name = "sleeper"

    def build(self) -> None:
        self.add_ram(0, 0x1000)
        self.fired_at: int | None = None

        def fire() -> None:
            self.fired_at = self.clock.now_ns()
            self.request_shutdown("poweroff", 0)

        self.timers.timer(fire).arm(30_000_000)

    def run_cpus(self) -> bool:
        return True


def test_build_reset_run_exit_status() -> None:
    m = Spinner(memory=1 << 20)
    assert m.run() == 7
    assert m.shutdown_reason == "poweroff"
    assert m.lamp.value == 100 and m.lamp.resets == 1
    assert [r.name for r in m.space.regions()] == ["lamp", "ram"]


def test_options_checked() -> None:
    with pytest.raises(MachineError, match="1 to 4 CPUs"):
        Spinner(smp=5)
    with pytest.raises(MachineError, match="runs on interp"):
        Spinner(accel="kvm")
    with pytest.raises(MachineError, match="unknown option"):
        Spinner(colour="red")


def test_halted_cpus_sleep_until_the_next_timer() -> None:
    m = Sleeper()
    t0 = time.monotonic()
    assert m.run(timeout=5) == 0
    elapsed = time.monotonic() - t0
    assert m.fired_at is not None and m.fired_at >= 30_000_000
    assert elapsed < 2, "the loop slept until the timer, not until the timeout"


def test_timeout_stops_with_124() -> None:
    class Forever(Sleeper):
        def build(self) -> None:
            self.add_ram(0, 0x1000)

    assert Forever().run(timeout=0.2) == 124


def test_start_wait_stop_from_another_thread() -> None:
    class Endless(Spinner):
        def run_cpus(self) -> bool:
            self.steps += 1
            time.sleep(0.001)
            return False

    m = Endless()
    m.start()
    assert m.wait(0.05) is None
    assert m.stop() == 0 and m.shutdown_reason == "user"


def test_call_soon_runs_on_the_machine_thread_and_wakes_it() -> None:
    seen: list[str] = []

    class Forever(Sleeper):
        def build(self) -> None:
            self.add_ram(0, 0x1000)

    m = Forever()
    m.start()
    time.sleep(0.05)  # halted, sleeping: no timer armed

    def from_io_thread() -> None:
        m.call_soon(lambda: seen.append(threading.current_thread().name))
        m.call_soon(m.request_shutdown, "poweroff", 9)

    t = threading.Thread(target=from_io_thread, name="io")
    t.start()
    t.join()
    assert m.wait(2) == 9
    assert seen == [f"vmforge-{m.name}"]


def test_device_error_in_the_loop_reaches_the_caller() -> None:
    class Faulty(Spinner):
        def run_cpus(self) -> bool:
            raise RuntimeError("device exploded")

    m = Faulty()
    with pytest.raises(RuntimeError, match="exploded"):
        m.run()
    assert m.shutdown_reason == "error"


def test_virtual_clock_and_timers() -> None:
    clock = VirtualClock()
    q = TimerQueue(clock)
    fired: list[str] = []
    a, b = q.timer(lambda: fired.append("a")), q.timer(lambda: fired.append("b"))
    a.arm(100)
    b.arm(50)
    a.arm(200)  # re-arming replaces the old deadline
    assert q.next_deadline() == 50
    clock.advance(150)
    assert q.run_due() == 1 and fired == ["b"]
    b.arm(300)
    b.cancel()
    clock.advance(1000)
    assert q.run_due() == 1 and fired == ["b", "a"]
    assert q.next_deadline() is None
    clock.resume()
    time.sleep(0.01)
    assert clock.now_ns() >= 1150 + 5_000_000
    clock.pause()
    frozen = clock.now_ns()
    time.sleep(0.01)
    assert clock.now_ns() == frozen


def test_qemu_option_strings() -> None:
    assert parse_opts("virt,aclint=on,dumpdtb=a,,b", "type") == {
        "type": "virt", "aclint": "on", "dumpdtb": "a,b"}
    d = DriveSpec.parse("file=d.qcow2,format=qcow2,if=virtio,readonly=on,cache=none")
    assert (d.file, d.format, d.interface, d.readonly, d.options) == (
        "d.qcow2", "qcow2", "virtio", True, {"cache": "none"})
    assert DeviceSpec.parse("ns16550a,regshift=2").props == {"regshift": "2"}
    assert MachineConfig.parse_memory("512") == 512 << 20
    assert MachineConfig.parse_memory("size=2G") == 2 << 30
    with pytest.raises(ValueError):
        DriveSpec.parse("format=raw")
    with pytest.raises(ValueError, match="twice"):
        parse_opts("a=1,a=2")


def test_vmforge_run_uses_the_machine_plugin(test_dists, vmforge_cli) -> None:
    out = vmforge_cli("run", "-M", "countdown,start=50,exit=3", extra_path=test_dists)
    assert out.returncode == 3, out.stderr
    out = vmforge_cli("run", "-M", "countdown,halt=on,delay_ms=20,exit=5", "-smp", "2",
                      extra_path=test_dists)
    assert out.returncode == 5, out.stderr
    out = vmforge_cli("run", "-M", "countdown,halt=on,delay_ms=100000", "--timeout", "0.3",
                      extra_path=test_dists)
    assert out.returncode == 124
    out = vmforge_cli("run", "-M", "countdown", "-smp", "3", extra_path=test_dists)
    assert out.returncode == 1 and "1 to 2 CPUs" in out.stderr
    out = vmforge_cli("run", "-M", "nosuchboard", extra_path=test_dists)
    assert out.returncode == 1 and "no machine plugin named 'nosuchboard'" in out.stderr
    assert "countdown" in out.stderr
    listing = vmforge_cli("run", "-M", "help", extra_path=test_dists)
    assert "countdown" in listing.stdout and "vmforge-test-machine" in listing.stdout


def test_plugins_add_options_to_run(test_dists, bad_hooks_dist, vmforge_cli) -> None:
    out = vmforge_cli("run", "--help", extra_path=test_dists)
    assert out.returncode == 0 and "--from-hook" in out.stdout
    # a broken hooks plugin fails `run` with its name, but not the plugin listing
    both = f"{test_dists}{os.pathsep}{bad_hooks_dist}"
    out = vmforge_cli("run", "-M", "countdown", extra_path=both)
    assert out.returncode == 1 and "vmforge-test-badhooks" in out.stderr
    assert "Traceback" not in out.stderr
    assert vmforge_cli("plugins", extra_path=both).returncode == 0
    out = vmforge_cli("-p", "no:vmforge-test-badhooks", "run", "-M", "countdown,exit=4",
                      extra_path=both)
    assert out.returncode == 4, out.stderr


def test_trace_categories(test_dists, vmforge_cli, tmp_path) -> None:
    out = vmforge_cli("run", "-d", "help")
    assert out.returncode == 0 and "guest_errors" in out.stdout and "plugins" in out.stdout
    assert "in_asm" in out.stdout and "mmu" in out.stdout
    out = vmforge_cli("run", "-d", "in_asm,bogus", "-M", "countdown", extra_path=test_dists)
    assert out.returncode == 1 and "unknown trace categories bogus" in out.stderr
    log = tmp_path / "trace.log"
    out = vmforge_cli("run", "-M", "countdown,exit=2", "-d", "plugins", "-D", str(log),
                      extra_path=test_dists)
    assert out.returncode == 2, out.stderr
    text = log.read_text()
    assert "vmforge_machine_created" in text and "vmforge_machine_shutdown" in text


def test_unsupported_options_are_refused_not_ignored() -> None:
    class Board(Spinner):
        def build(self) -> None:
            self.refuse_unsupported("drives", "netdevs")
            super().build()

    with pytest.raises(MachineError, match="does not support -drive"):
        Board(drives=[DriveSpec.parse("file=x.img")]).realize()
    assert Board().run() == 7


def test_timeout_fires_while_paused() -> None:
    """``--timeout`` ends a machine that waits paused (``-S``, the monitor's stop)."""
    m = Spinner(memory=0x1000)
    m.realize()
    m.pause()
    t0 = time.monotonic()
    assert m.run(timeout=0.3) == 124
    assert m.shutdown_reason == "timeout" and time.monotonic() - t0 < 5
