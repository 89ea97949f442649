"""``vmforge run`` refuses bad input and reports failures as QEMU does: one line
on stderr, a non-zero exit status, never a Python traceback."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from vmforge.config import (
    ConfigError,
    MachineConfig,
    MachineProp,
    check_machine_props,
)
from vmforge.memory import GuestMemory, RamAllocationError


@pytest.fixture
def loop_kernel(tmp_path: Path) -> str:
    """A raw RISC-V kernel that spins (``j .``): what the virt board needs to start."""
    path = tmp_path / "loop.bin"
    path.write_bytes((0x6F).to_bytes(4, "little"))
    return str(path)


def one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> str:
    """The single stderr line of a failed run, which names ``words``."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def virt(vmforge_cli, kernel: str, *args: str) -> subprocess.CompletedProcess[str]:
    return vmforge_cli("run", "-M", "riscv-virt", "-bios", "none", "-kernel", kernel,
                       "--timeout", "5", *args)


# -- host resources and files --------------------------------------------------------------

def test_guest_ram_the_host_cannot_give(vmforge_cli, loop_kernel) -> None:
    # 4 PiB is past any host's address space; -m 1T fails the same way where the
    # host cannot map it
    line = one_line_error(virt(vmforge_cli, loop_kernel, "-m", "4P"))
    assert line == ("vmforge run: cannot set up guest memory 'ram' (4 PiB): "
                    "Cannot allocate memory"), line


def test_missing_dtb(vmforge_cli, loop_kernel, tmp_path) -> None:
    missing = str(tmp_path / "nonexistent.dtb")
    line = one_line_error(virt(vmforge_cli, loop_kernel, "-dtb", missing))
    assert line == f"vmforge run: {missing}: No such file or directory"


def test_log_file_in_a_missing_directory(vmforge_cli, loop_kernel, tmp_path) -> None:
    log = str(tmp_path / "nonexistent" / "x.log")
    line = one_line_error(virt(vmforge_cli, loop_kernel, "-d", "guest_errors", "-D", log))
    assert line == f"vmforge run: -D {log}: cannot open the log file: No such file or directory"


# -- option values -------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (["-m", "1.0e400"], ["-m 1.0e400", "is not a size"]),
    (["-m", "abc"], ["-m abc", "is not a size"]),
    (["-m", "16E"], ["-m 16E", "too large"]),
    (["-m", "1G,slots=2"], ["unknown option slots"]),
    (["-smp", "abc"], ["-smp abc: Parameter 'cpus' expects a number"]),
    (["-smp", "0"], ["-smp 0: at least one CPU"]),
    (["-smp", "2,bogus=1"], ["unknown option bogus", "cores"]),
    (["-smp", "4,sockets=3"], ["does not make 4 CPUs"]),
    (["--timeout", "nan"], ["--timeout nan"]),
    (["--timeout", "-1"], ["--timeout -1", "0 seconds or more"]),
    (["--timeout", "soon"], ["--timeout soon: not a number of seconds"]),
])
def test_bad_option_values_are_refused(vmforge_cli, loop_kernel, args, words) -> None:
    one_line_error(virt(vmforge_cli, loop_kernel, *args), *words)


def test_unknown_machine_property_is_refused(vmforge_cli, loop_kernel) -> None:
    out = vmforge_cli("run", "-M", "riscv-virt,bogus=1", "-bios", "none",
                      "-kernel", loop_kernel, "--timeout", "5")
    one_line_error(out, "machine 'riscv-virt' has no property 'bogus'")


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_spike_slice_must_be_a_positive_count(vmforge_cli, loop_kernel, value) -> None:
    out = vmforge_cli("run", "-M", f"spike,slice={value}", "-bios", "none",
                      "-kernel", loop_kernel, "--timeout", "5")
    one_line_error(out, "slice")


def test_machine_properties_are_checked(test_dists, vmforge_cli) -> None:
    """The test machine declares start/exit/halt/delay_ms/crash: names and values
    are checked against the declarations, and -M NAME,help lists them."""
    out = vmforge_cli("run", "-M", "countdown,bogus=1,start=3", extra_path=test_dists)
    one_line_error(out, "machine 'countdown' has no property 'bogus'",
                   "crash, delay_ms, exit, halt, start")
    out = vmforge_cli("run", "-M", "countdown,start=abc", extra_path=test_dists)
    one_line_error(out, "start=abc", "not an integer", "int expected")
    out = vmforge_cli("run", "-M", "countdown,exit=300", extra_path=test_dists)
    one_line_error(out, "exit=300", "above the maximum, 255")
    out = vmforge_cli("run", "-M", "countdown,halt=maybe", extra_path=test_dists)
    one_line_error(out, "halt=maybe", "on/off")
    out = vmforge_cli("run", "-M", "countdown,help", extra_path=test_dists)
    assert out.returncode == 0, out.stderr
    assert "start=<int>" in out.stdout and "halt=<on/off>" in out.stdout
    out = vmforge_cli("run", "-M", "countdown,start=3,exit=7", extra_path=test_dists)
    assert out.returncode == 7, out.stderr


# -- unexpected exceptions -----------------------------------------------------------------

def test_internal_error_is_one_line(test_dists, vmforge_cli) -> None:
    out = vmforge_cli("run", "-M", "countdown,crash=on", extra_path=test_dists)
    line = one_line_error(out)
    assert line == ("vmforge: internal error: RuntimeError: the fake CPU crashed on two "
                    "lines (VMFORGE_DEBUG=1 shows the traceback)"), line
    out = vmforge_cli("run", "-M", "countdown,crash=on", extra_path=test_dists,
                      env={"VMFORGE_DEBUG": "1"})
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "RuntimeError: the fake CPU crashed" in out.stderr


# -- the parsers themselves ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "size"), [
    ("512", 512 << 20), ("1.5", 3 << 19), ("1.5G", 3 << 29), ("size=2G", 2 << 30),
    ("2gb", 2 << 30), ("1KiB", 8192), ("100B", 8192), ("0", 0), ("1T", 1 << 40),
])
def test_parse_memory(text: str, size: int) -> None:
    assert MachineConfig.parse_memory(text) == size


@pytest.mark.parametrize(("text", "cpus"), [
    ("1", 1), ("cpus=3", 3), ("sockets=2,cores=2", 4), ("4,sockets=2,threads=2", 4),
    ("2,maxcpus=2", 2),
])
def test_parse_smp(text: str, cpus: int) -> None:
    assert MachineConfig.parse_smp(text) == cpus


def test_check_machine_props() -> None:
    declared = {"slice": MachineProp(int, 200_000, min=1), "fast": MachineProp(bool, False),
                "ratio": MachineProp(float, 1.0, max=2), "mode": MachineProp(str, "a",
                                                                         choices=("a", "b"))}
    assert check_machine_props("m", declared, {}) == {"slice": 200_000, "fast": False,
                                                      "ratio": 1.0, "mode": "a"}
    got = check_machine_props("m", declared, {"slice": "0x10", "fast": "on", "ratio": "1.5",
                                              "mode": "b"})
    assert got == {"slice": 16, "fast": True, "ratio": 1.5, "mode": "b"}
    for props, match in [({"slice": "0"}, "below the minimum, 1"),
                         ({"ratio": "inf"}, "not a finite number"),
                         ({"ratio": "3"}, "above the maximum, 2"),
                         ({"mode": "c"}, "not one of a, b"),
                         ({"x": "1", "y": "2"}, "no properties 'x', 'y'")]:
        with pytest.raises(ConfigError, match=match):
            check_machine_props("m", declared, props)
    with pytest.raises(ConfigError, match="it has none"):
        check_machine_props("m", {}, {"x": "1"})


def test_ram_the_host_cannot_map() -> None:
    with pytest.raises(RamAllocationError,
                       match=r"cannot set up guest memory 'big' \(4 EiB\): ") as info:
        GuestMemory().add_ram(0, 1 << 62, name="big")
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOMEM
