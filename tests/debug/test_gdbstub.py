"""The stub against a riscv-virt machine, driven by a small protocol client."""

from __future__ import annotations

import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from gdbkit import COUNTER, FINISH, RAM, Vm, make_vm, stop_vm, wait_until

PC, PRIV, CSR0 = 0x20, 65, 66
T0, A0 = 5, 10


def _hello(c) -> None:
    assert "qXfer:features:read+" in c.ask("qSupported:swbreak+;hwbreak+;xmlRegisters=i386")
    assert c.ask("?") == "T05thread:1;"


def test_handshake_and_target_description(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    assert c.ask("qfThreadInfo") == "m1" and c.ask("qsThreadInfo") == "l"
    assert c.ask("qC") == "QC1" and c.ask("qAttached") == "1"
    assert c.ask("vCont?") == "vCont;c;C;s;S"
    assert c.ask("vMustReplyEmpty") == ""
    xml, offset = "", 0
    while True:                                  # small chunks: m...m...l
        part = c.ask(f"qXfer:features:read:target.xml:{offset:x},200")
        xml += part[1:]
        offset += len(part) - 1
        if part[0] == "l":
            break
        assert part[0] == "m"
    regs = {r.get("name"): int(r.get("regnum")) for r in ET.fromstring(xml).iter("reg")}
    assert regs["pc"] == 32 and regs["ft0"] == 33 and regs["priv"] == 65
    assert regs["mstatus"] == CSR0 + 0x300 and regs["mhartid"] == CSR0 + 0xF14
    assert c.ask("qXfer:features:read:other.xml:0,100").startswith("E")
    assert c.ask("QStartNoAckMode") == "OK"
    c.acks.clear()
    assert c.ask("qC") == "QC1" and c.acks == []       # no more acks


def test_registers(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    g = c.ask("g")
    assert len(g) == 33 * 16
    assert int.from_bytes(bytes.fromhex(g[32 * 16:]), "little") == 0x1000   # the reset ROM
    assert c.reg(PC) == 0x1000 and c.reg(PRIV) == 3
    assert c.reg(CSR0 + 0xF14) == 0                          # mhartid
    assert c.reg(CSR0 + 0x301) >> 62 == 2                    # misa: RV64
    assert c.set_reg(T0, 0x1122334455667788) == "OK" and c.reg(T0) == 0x1122334455667788
    assert c.set_reg(0, 5) == "OK" and c.reg(0) == 0        # x0 stays 0
    assert c.set_reg(33 + 3, 0x3FF0000000000000) == "OK" and c.reg(33 + 3) == 0x3FF0000000000000
    assert c.set_reg(CSR0 + 0x340, 0xABC) == "OK" and c.reg(CSR0 + 0x340) == 0xABC  # mscratch
    assert vm.machine.cpus[0].csr("mscratch") == 0xABC
    assert c.ask("p2000").startswith("E")                    # no such register
    assert c.ask(f"p{CSR0 + 0x7FF:x}").startswith("E")       # no such CSR
    regs = bytearray(bytes.fromhex(c.ask("g")))
    regs[8 * 6:8 * 7] = (42).to_bytes(8, "little")           # t1 through G
    assert c.ask("G" + regs.hex()) == "OK" and c.reg(6) == 42
    assert c.set_reg(PRIV, 1) == "OK" and vm.machine.cpus[0].priv == 1
    assert c.set_reg(PRIV, 3) == "OK"


def test_breakpoints_continue_and_step(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    assert c.ask(f"Z0,{RAM + 4:x},4") == "OK"
    c.send("c")
    assert c.recv() == "T05thread:1;"
    assert c.reg(PC) == RAM + 4 and c.reg(T0) == 0
    assert c.ask("s") == "T05thread:1;" and c.reg(PC) == RAM + 8 and c.reg(T0) == 1
    assert c.ask("vCont;s:1") == "T05thread:1;" and c.reg(PC) == RAM + 12
    c.send("vCont;c")                                        # around the loop once
    assert c.recv() == "T05thread:1;" and c.reg(PC) == RAM + 4 and c.reg(T0) == 1
    assert c.ask(f"z0,{RAM + 4:x},4") == "OK"
    assert c.ask(f"Z1,{RAM + 0x10:x},4") == "OK"             # a hardware breakpoint
    c.send("c")
    assert c.recv() == "T05thread:1;" and c.reg(PC) == RAM + 0x10
    assert c.reg(T0) == 2
    assert int.from_bytes(bytes.fromhex(c.ask(f"m{COUNTER:x},8")), "little") == 2
    # continue at an address (c ADDR): straight to the finisher, which ends the guest
    assert c.ask(f"z1,{RAM + 0x10:x},4") == "OK"
    c.send(f"c{FINISH:x}")
    assert c.recv() == "W00"
    assert vm.machine.wait(10) == 0


def test_breakpoint_hits_in_compiled_code(vm: Vm) -> None:
    """The loop is hot enough to be compiled; a breakpoint set afterwards still
    stops there, every time round."""
    c = vm.connect()
    _hello(c)
    c.send("c")
    time.sleep(0.3)
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"
    first = c.reg(T0)
    assert first > 1000
    hart = vm.machine.cpus[0]
    if hart.jit:                                             # x86-64: the loop was compiled
        assert hart._stats()["jit_calls"] > 0
    assert c.ask(f"Z0,{RAM + 0xC:x},4") == "OK"
    for i in range(3):
        c.send("c")
        assert c.recv() == "T05thread:1;"
        assert c.reg(PC) == RAM + 0xC and c.reg(T0) == first + 1 + i


def test_ctrl_c_stops_a_running_guest(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    c.send("c")
    time.sleep(0.2)
    assert vm.machine.cpus[0].instret > 0 and not vm.machine.paused
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"
    assert vm.machine.paused
    assert RAM + 4 <= c.reg(PC) <= RAM + 0x10
    n = c.reg(T0)
    time.sleep(0.2)
    assert c.reg(T0) == n                                   # stopped means stopped
    c.send_raw(b"\x03")                                      # while stopped: nothing
    assert c.ask("qC") == "QC1"


def test_memory(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    assert c.ask(f"m{RAM:x},4") == "93020000"                # li t0, 0
    assert c.ask(f"M{RAM + 0x200:x},4:deadbeef") == "OK"
    assert c.ask(f"m{RAM + 0x200:x},4") == "deadbeef"
    data = bytes([0x7D, 0x23, 0x24, 0x2A, 0, 0xFF])
    escaped = b"".join(bytes((0x7D, b ^ 0x20)) if b in b"}#$*" else bytes((b,)) for b in data)
    c.send(b"X%x,%x:" % (RAM + 0x300, len(data)) + escaped)
    assert c.recv() == "OK"
    assert bytes.fromhex(c.ask(f"m{RAM + 0x300:x},6")) == data
    assert c.ask(f"X{RAM:x},0:") == "OK"                    # gdb's probe
    assert c.ask("m0,4").startswith("E")                    # nothing at 0
    ram_end = RAM + (64 << 20)
    assert c.ask(f"m{ram_end - 2:x},4") == "0000"           # a partial read
    assert c.ask("M0,4:00000000").startswith("E")
    assert c.ask("m1000,4") != ""                           # the reset ROM reads
    # code written by the debugger runs: the loop's addi t0,t0,1 becomes +2
    assert c.ask(f"Z0,{RAM + 8:x},4") == "OK"
    c.send("c")
    assert c.recv() == "T05thread:1;"
    assert c.ask(f"M{RAM + 4:x},4:93822200") == "OK"        # addi t0, t0, 2
    c.send("c")
    assert c.recv() == "T05thread:1;" and c.reg(T0) == 3


def test_virtual_and_physical_memory(vm: Vm) -> None:
    """Addresses go through the selected hart's MMU; Qqemu.PhyMemMode:1 turns
    that off (gdb: maintenance packet Qqemu.PhyMemMode:1)."""
    c = vm.connect()
    _hello(c)
    root = RAM + 0x10_0000
    pte = (RAM >> 12) << 10 | 0xCF                           # 1 GiB page, V R W X A D
    assert c.ask(f"M{root + 8:x},8:{pte.to_bytes(8, 'little').hex()}") == "OK"
    assert c.set_reg(CSR0 + 0x180, 8 << 60 | root >> 12) == "OK"      # satp: Sv39
    assert c.ask("m40000000,4").startswith("E")             # M-mode: physical
    assert c.set_reg(PRIV, 1) == "OK"                       # S-mode: translated
    assert c.ask("m40000000,4") == "93020000"
    assert c.ask("M40000200,2:abcd") == "OK"
    assert vm.machine.space.memory.read(RAM + 0x200, 2) == b"\xab\xcd"
    assert c.ask("m80000000,4").startswith("E")             # unmapped virtually
    assert c.ask("qqemu.PhyMemMode") == "0"
    assert c.ask("Qqemu.PhyMemMode:1") == "OK" and c.ask("qqemu.PhyMemMode") == "1"
    assert c.ask("m80000000,4") == "93020000"
    assert c.ask("m40000000,4").startswith("E")
    assert c.ask("Qqemu.PhyMemMode:0") == "OK"
    assert c.ask("m40000000,4") == "93020000"


def test_watchpoints_stop_before_the_access_in_compiled_code(vm: Vm) -> None:
    """Z2/Z4 on the loop's counter, set once the loop is compiled: the hart stops
    at the store, before it (as QEMU's RISC-V target), and says which watchpoint;
    Z3 (read) never fires on a counter nobody reads; at most 64 ranges."""
    c = vm.connect()
    _hello(c)
    c.send("c")
    time.sleep(0.3)
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"
    assert c.ask(f"Z3,{COUNTER:x},8") == "OK"
    assert c.ask(f"Z2,{COUNTER + 4:x},1") == "OK"            # one byte of the counter
    c.send("c")
    assert c.recv() == f"T05thread:1;watch:{COUNTER + 4:x};"
    t0 = c.reg(T0)
    assert c.reg(PC) == RAM + 0xC and int(c.ask(f"m{COUNTER:x},8"), 16) != 0
    assert vm.machine.space.memory.read_u64(COUNTER) == t0 - 1      # not stored yet
    assert c.ask(f"z2,{COUNTER + 4:x},1") == "OK"
    assert c.ask("s") == "T05thread:1;" and c.reg(PC) == RAM + 0x10
    assert vm.machine.space.memory.read_u64(COUNTER) == t0
    assert c.ask(f"Z4,{COUNTER:x},8") == "OK"
    c.send("c")
    assert c.recv() == f"T05thread:1;awatch:{COUNTER:x};" and c.reg(T0) == t0 + 1
    assert c.ask(f"z4,{COUNTER:x},8") == "OK" and c.ask(f"z3,{COUNTER:x},8") == "OK"
    assert c.ask(f"z2,{COUNTER:x},8") == "OK"                # not set: nothing to do
    for i in range(64):
        assert c.ask(f"Z2,{RAM + 0x10000 + 8 * i:x},8") == "OK"
    assert c.ask(f"Z2,{RAM + 0x20000:x},8") == "E28"
    assert c.ask(f"Z2,{RAM:x},0") == "E22"
    assert c.ask("Z4,fffffffffffffff0,100") == "E22"          # runs past 2**64


def test_breakpoint_limit(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    for i in range(16):
        assert c.ask(f"Z0,{RAM + 0x1000 + 4 * i:x},4") == "OK"
    assert c.ask(f"Z0,{RAM + 0x2000:x},4").startswith("E")
    assert c.ask(f"Z0,{RAM + 0x1000:x},4") == "OK"          # again: still fine
    assert c.ask(f"z0,{RAM + 0x1000:x},4") == "OK"
    assert c.ask(f"Z0,{RAM + 0x2000:x},4") == "OK"
    assert len(vm.machine.cpus[0].breakpoints) == 16


def test_malformed_packets_leave_the_vm_alone(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    c.acks.clear()
    c.send_raw(b"$g#00")                                     # bad checksum: a nack
    c.send_raw(b"$qC#zz")
    c.send_raw(b"garbage")
    assert c.ask("qC") == "QC1"
    assert c.acks[:2] == [b"-", b"-"]
    for bad in ["m,", "mzz,4", "m0", "pxyz", "P1", "P1=zz", "P1=" + "00" * 9, "Z0,zz,4",
                "Z0", "z9", "Hgzz", "Hg99", "Hx1", "T99", "Tzz", f"M{RAM:x},8:00",
                f"X{RAM:x},4:ab", "X1", "qXfer:features:read:target.xml:zz",
                "qRcmd,zz", "vCont;x", "vCont;s:99", "vCont", "G0", "\xff\xfe",
                "qThreadExtraInfo,zz", "s" + "f" * 40, "c80000000zz"]:
        reply = c.ask(bad)
        assert reply == "" or reply.startswith("E"), (bad, reply)
    assert c.ask("?") == "T05thread:1;"
    assert c.reg(PC) == 0x1000
    c.send("c")                                              # it still runs
    assert wait_until(lambda: vm.machine.cpus[0].instret > 1000)
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"


def test_monitor_commands(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    c.send("qRcmd," + b"info cpus".hex())
    out = c.recv()
    assert out.startswith("O")
    assert "CPU #0: pc=0x0000000000001000" in bytes.fromhex(out[1:]).decode()
    assert c.recv() == "OK"
    c.send("qRcmd," + b"nosuch".hex())
    assert "unknown command" in bytes.fromhex(c.recv()[1:]).decode()
    assert c.recv() == "OK"


def test_detach_lets_the_guest_run(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    assert c.ask(f"Z0,{RAM + 4:x},4") == "OK"
    assert c.set_reg(PC, FINISH) == "OK"
    assert c.ask("D") == "OK"
    assert vm.machine.wait(10) == 0                         # it reached the finisher
    assert vm.machine.cpus[0].breakpoints == ()


def test_closing_the_connection_detaches(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    assert c.ask(f"Z0,{RAM + 4:x},4") == "OK"
    c.close()
    assert wait_until(lambda: vm.machine.cpus[0].instret > 1000)
    assert vm.machine.cpus[0].breakpoints == ()
    c2 = vm.connect()                                        # a second gdb: stops it
    _hello(c2)
    assert vm.machine.paused
    pc = c2.reg(PC)
    assert RAM + 4 <= pc <= RAM + 0x10


def test_kill_stops_the_machine(vm: Vm) -> None:
    c = vm.connect()
    _hello(c)
    c.send("k")
    assert vm.machine.wait(10) == 0
    assert vm.machine.shutdown_reason == "user"


def test_harts_are_threads(tmp_path: Path) -> None:
    v = make_vm(tmp_path, smp=2)
    try:
        c = v.connect()
        _hello(c)
        assert c.ask("qfThreadInfo") == "m1,2"
        assert c.reg(A0) == 0                                 # a0 = hart id at reset
        assert c.ask("Hg2") == "OK" and c.reg(A0) == 1
        assert c.reg(CSR0 + 0xF14) == 1                       # mhartid
        assert c.set_reg(T0, 77) == "OK"
        assert v.machine.cpus[1].x[T0] == 77 and v.machine.cpus[0].x[T0] == 0
        assert c.ask("Hg1") == "OK" and c.reg(T0) == 0
        assert c.ask("Hg0") == "OK" and c.ask("Hg-1") == "OK"
        assert c.ask("T2") == "OK" and c.ask("T3").startswith("E")
        assert bytes.fromhex(c.ask("qThreadExtraInfo,2")).decode() == "CPU#1 [running]"
        # step hart 1 alone
        assert c.ask("vCont;s:2;c") == "T05thread:2;"
        assert v.machine.cpus[1].pc != 0x1000 and v.machine.cpus[0].pc == 0x1000
        assert c.ask("qC") == "QC2"
        # a breakpoint both harts reach: one of them stops the machine
        assert c.ask(f"Z0,{RAM + 4:x},4") == "OK"
        c.send("c")
        assert c.recv() in ("T05thread:1;", "T05thread:2;")
        assert any(h.pc == RAM + 4 for h in v.machine.cpus)
        # gdb's multiprocess thread ids
        assert "multiprocess+" in c.ask("qSupported:multiprocess+;swbreak+")
        assert c.ask("qfThreadInfo") == "mp1.1,p1.2"
        assert c.ask("Hgp1.2") == "OK" and c.reg(A0) == 1
        assert c.ask("Hgp0.0") == "OK" and c.ask("Hgp2.1").startswith("E")
        assert c.ask("vCont;s:p1.1") == "T05thread:p1.1;"
    finally:
        stop_vm(v)


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    v = make_vm(tmp_path, dev=f"unix:{path},server=on,wait=off")
    try:
        assert v.stub.address == f"unix:{path}"
        c = v.connect()
        _hello(c)
        assert c.reg(PC) == 0x1000
    finally:
        stop_vm(v)
    assert not path.exists()


def test_step_holds_interrupts_off(vm: Vm) -> None:
    """A pending, enabled interrupt does not hijack a step (QEMU's default
    SSTEP_NOIRQ); it is taken once the guest continues."""
    c = vm.connect()
    _hello(c)
    assert c.ask(f"Z0,{RAM + 4:x},4") == "OK"
    c.send("c")
    assert c.recv() == "T05thread:1;"
    assert c.ask(f"z0,{RAM + 4:x},4") == "OK"
    handler = RAM + 0x24                                       # j .
    assert c.set_reg(CSR0 + 0x305, handler) == "OK"            # mtvec
    assert c.set_reg(CSR0 + 0x304, 1 << 1) == "OK"             # mie.SSIE
    assert c.set_reg(CSR0 + 0x344, 1 << 1) == "OK"             # mip.SSIP pending
    assert c.set_reg(CSR0 + 0x300, c.reg(CSR0 + 0x300) | 1 << 3) == "OK"   # mstatus.MIE
    for pc in (RAM + 8, RAM + 0xC, RAM + 0x10):
        assert c.ask("s") == "T05thread:1;"
        assert c.reg(PC) == pc
    assert c.reg(CSR0 + 0x304) == 1 << 1                       # mie as it was
    c.send("c")
    time.sleep(0.1)
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"
    assert c.reg(PC) == handler
    assert c.reg(CSR0 + 0x342) == 1 << 63 | 1                  # mcause: SSI


def test_random_packets_leave_the_vm_alone(vm: Vm) -> None:
    """Random commands with random arguments (not the ones that resume, detach
    or kill): every one gets a reply and the stub and the VM carry on."""
    rng = random.Random(1234)
    c = vm.connect()
    _hello(c)
    alphabet = "0123456789abcdefABCDEF,:;=-pPxX.$#}*\x03 qQv"
    heads = ["g", "G", "p", "P", "m", "M", "X", "Z", "z", "H", "T", "?", "q", "Q", "qXfer:",
             "qRcmd,", "qThreadExtraInfo,", "qSupported:", "Qqemu.PhyMemMode:", "vCont?",
             "vMustReplyEmpty", "y", "\x7f"]
    for _ in range(400):
        body = rng.choice(heads) + "".join(rng.choice(alphabet)
                                           for _ in range(rng.randrange(0, 40)))
        raw = body.encode("latin-1").replace(b"$", b"").replace(b"#", b"").replace(b"\x03", b"")
        reply = c.ask(raw)
        assert isinstance(reply, str)
    assert c.ask("Qqemu.PhyMemMode:0") == "OK"
    assert c.ask("Hg1") == "OK" and c.ask("?").startswith("T05thread:")
    for addr in list(vm.stub.breakpoints):
        assert c.ask(f"z0,{addr:x},4") == "OK"
    c.send("c")
    assert wait_until(lambda: vm.machine.cpus[0].instret > 1000)
    c.send_raw(b"\x03")
    assert c.recv().startswith("T02thread:")
