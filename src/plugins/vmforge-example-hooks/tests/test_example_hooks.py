"""The example hooks plugin through the real command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from vmforge.plugins import Registry
from vmforge.testing.oracles import oracle_missing

CC = shutil.which("riscv64-unknown-elf-gcc")
EXIT_7 = """
    .globl _start
_start:
    la t0, skip
    csrw mtvec, t0
    .option norvc
bad:
    .word 0x0000000b
    la t0, tohost
    li t1, (7 << 1) | 1
    sd t1, 0(t0)
1:  j 1b
    .align 2
skip:                       # the trap handler: on after the illegal instruction
    csrr t0, mepc
    addi t0, t0, 4
    csrw mepc, t0
    mret
    .data
    .align 3
    .globl tohost
tohost: .dword 0
"""


def test_registered_and_valid() -> None:
    impls = Registry().hook_implementers()
    for hook in ("vmforge_add_options", "vmforge_configure", "vmforge_machine_shutdown",
                 "vmforge_guest_illegal_instruction"):
        assert "vmforge-example-hooks:event-log" in impls[hook]


def test_event_log_of_a_run(tmp_path) -> None:
    log = tmp_path / "events.jsonl"
    help_text = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "--help"],
                               capture_output=True, text=True).stdout
    assert "--event-log" in help_text
    # a machine that cannot be built still logs nothing and fails cleanly
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "spike",
                          "-bios", "none", "--event-log", str(log)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "give -kernel" in out.stderr
    assert not log.exists()


def test_events_of_a_spike_run(tmp_path) -> None:
    if CC is None:
        oracle_missing("riscv64-unknown-elf-gcc is not installed "
                       "(Debian package gcc-riscv64-unknown-elf)")
    (tmp_path / "p.S").write_text(EXIT_7)
    elf = tmp_path / "p.elf"
    subprocess.run([CC, "-nostdlib", "-Wl,-N", "-Wl,-Ttext=0x80000000", "-o", str(elf),
                    str(tmp_path / "p.S")], check=True)
    log = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "spike",
                          "-bios", "none", "-kernel", str(elf), "--event-log", str(log)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 7, out.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["created", "reset", "illegal-instruction",
                                            "shutdown"]
    assert events[0]["machine"] == "spike" and events[0]["cpus"] == 1
    assert events[1]["reason"] == "power-on"
    assert (events[2]["address"], events[2]["bits"], events[2]["hart"]) == (
        0x8000_000C, 0x0B, 0)          # after la (auipc, addi) and csrw: the word
    assert (events[3]["reason"], events[3]["status"]) == ("fail", 7)
