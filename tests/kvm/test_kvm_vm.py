"""Two vCPUs, dirty logging, ioeventfd, irqfd and IRQ lines, stop(), error exits."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vmforge.accel.kvm import KvmExitError, VcpuExit

from .conftest import ram
from .test_kvm_io import Recorder, boot_real


def test_two_vcpus_on_two_threads(vm, guest):
    from vmforge.accel.kvm.x86 import enter_real_mode

    mem = ram()
    mem.write(0x1000, guest("twocpu.S"))
    vm.map_memory(mem)
    cpus = [vm.create_vcpu(0), vm.create_vcpu(1)]
    enter_real_mode(cpus[0], 0x1000)
    enter_real_mode(cpus[1], 0x1100)
    seen: dict[int, list] = {0: [], 1: []}
    results: dict[int, object] = {}

    def go(i: int) -> None:
        class Cb:
            def pio_out(self, port, size, value):
                seen[i].append((threading.get_ident(), value))
        results[i] = cpus[i].run(Cb())

    threads = [threading.Thread(target=go, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {0: VcpuExit.HLT, 1: VcpuExit.HLT}
    assert [v for _t, v in seen[0]] == [0xA0] and [v for _t, v in seen[1]] == [0xB1]
    assert seen[0][0][0] == threads[0].ident and seen[1][0][0] == threads[1].ident


def test_dirty_page_logging(vm, guest):
    mem = ram()
    mem.write(0x1000, guest("dirty.S"))
    vm.map_memory(mem, log_dirty=True)
    from vmforge.accel.kvm.x86 import enter_real_mode

    vcpu = vm.create_vcpu()
    enter_real_mode(vcpu, 0x1000)
    assert vm.dirty_pages(0) == []               # host writes are not the guest's
    assert vcpu.run(Recorder()) is VcpuExit.HLT
    assert vm.dirty_pages(0) == [2, 5, 7]
    assert vm.dirty_pages(0) == []               # reading the log resets it
    assert mem.read_u8(0x5123) == 1


def test_ioeventfd_port_and_mmio(vm, guest):
    vcpu, _ = boot_real(vm, guest("ioevent.S"))
    port_fd = os.eventfd(0, os.EFD_NONBLOCK)
    mmio_fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        vm.ioeventfd(port_fd, 0x40, 1, pio=True)
        vm.ioeventfd(mmio_fd, 0x20000, 4, datamatch=0x1234)
        cb = Recorder()
        assert vcpu.run(cb) is VcpuExit.HLT
        assert os.eventfd_read(port_fd) == 1
        assert os.eventfd_read(mmio_fd) == 1
        # the writes the eventfds took never reached the callbacks; the other did
        assert cb.log == [("w", 0x20000, 4, 0x9999), ("out", 0x10, 1, 1)]
    finally:
        os.close(port_fd)
        os.close(mmio_fd)


def _irq_guest(vm, guest, raise_irq, before=None):
    """The PIC guest; ``before(vm)`` runs once the irqchip exists, ``raise_irq(vm)``
    when the guest is ready."""
    vm.set_tss_addr(0xFFFBD000)                   # past 2**31: an unsigned long argument
    vm.create_irqchip()
    vm.create_pit()
    if before is not None:
        before(vm)
    vcpu, mem = boot_real(vm, guest("irq.S"))
    mem.write_u16(0x25 * 4, 0x1080)               # IVT[0x25] = 0000:1080
    mem.write_u16(0x25 * 4 + 2, 0)
    vectors = []

    class Cb:
        def pio_out(self, port, size, value):
            if port == 0x99:
                raise_irq(vm)
            elif port == 0x10:
                vectors.append(value)
                vcpu.stop()                       # hlt stays in the kernel with an irqchip
            elif port not in (0x20, 0x21):
                raise AssertionError(f"port {port:#x}")

    assert vcpu.run(Cb()) is VcpuExit.STOPPED
    return vectors


def test_irqfd_reaches_the_guest_handler(vm, guest):
    efd = os.eventfd(0)
    try:
        assert _irq_guest(vm, guest, lambda _vm: os.eventfd_write(efd, 1),
                          before=lambda v: v.irqfd(efd, 5)) == [0x25]
    finally:
        os.close(efd)


def test_irq_line_reaches_the_guest_handler(vm, guest):
    assert _irq_guest(vm, guest, lambda v: v.pulse_irq(5)) == [0x25]


def test_stop_from_another_thread(vm, guest):
    vm.create_irqchip()
    vcpu, _ = boot_real(vm, guest("irq.S"))       # ends in sti; hlt with nothing coming
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", vcpu.run(Recorder())))
    t.start()
    time.sleep(1.0)
    assert t.is_alive()                           # blocked in KVM_RUN (hlt in the kernel)
    vcpu.stop()
    t.join(30)
    assert not t.is_alive() and box["r"] is VcpuExit.STOPPED
    assert vcpu.get_regs().rip in (0x1016, 0x1017, 0x1018)   # in the sti; hlt loop


def test_instruction_fetch_from_mmio_raises_with_registers(vm, guest):
    vcpu, _ = boot_real(vm, guest("fetch.S"))
    with pytest.raises(KvmExitError) as info:
        vcpu.run(Recorder())
    err = info.value
    assert err.name == "INTERNAL_ERROR" and err.reason == 17
    assert err.suberror is not None and err.suberror >= 1
    assert err.regs is not None and err.regs.rip == 0
    assert "KVM_EXIT_INTERNAL_ERROR" in str(err) and "suberror=" in str(err)


def test_halt_callback_resumes_and_pre_post_run_frame_each_entry(vm, guest):
    vcpu, _ = boot_real(vm, guest("hlt2.S"))
    events = []

    class Cb:
        def pre_run(self, v):
            events.append("pre")

        def post_run(self, v):
            events.append("post")

        def pio_out(self, port, size, value):
            events.append(value)

        def halt(self, v):
            events.append("hlt")
            return events.count("hlt") < 3        # resume twice, then end the run

    assert vcpu.run(Cb()) is VcpuExit.HLT
    assert events == ["pre", "post", "hlt", "pre", "post", 1, "pre", "post", "hlt",
                      "pre", "post", 2, "pre", "post", "hlt"]
    assert vcpu.exits == 5


def test_ctrl_c_interrupts_run_on_the_main_thread(vm, guest):
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach Python handlers on the main thread only")
    vm.create_irqchip()
    vcpu, _ = boot_real(vm, guest("irq.S"))       # sti; hlt forever, in the kernel
    main = threading.main_thread().ident
    timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            vcpu.run(Recorder())
    finally:
        timer.cancel()
    # the vCPU can run again afterwards (and be stopped)
    vcpu.stop()
    assert vcpu.run(Recorder()) is VcpuExit.STOPPED


def test_user_space_interrupt_injection(vm, guest):
    vcpu, mem = boot_real(vm, guest("inject.S"))
    mem.write_u16(0x25 * 4, 0x1080)
    events = []

    class Cb:
        def pio_out(self, port, size, value):
            events.append(value)

        def halt(self, v):
            events.append(("hlt", v.ready_for_interrupt_injection))
            if len(events) == 1:                  # the first hlt (IF=1): inject, go on
                v.interrupt(0x25)
                return True
            return False

    assert vcpu.run(Cb()) is VcpuExit.HLT
    # the interrupt ended the first hlt, its handler ran, then the guest went on
    assert events == [("hlt", True), 0x25, 2, ("hlt", False)]


def test_more_vcpu_state(vm, kvm):
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    d = vcpu.get_debugregs()
    assert d["dr6"] == 0xFFFF0FF0 and d["dr7"] == 0x400      # the reset values
    vcpu.set_debugregs({"db0": 0x1234, "dr7": 0x401, "dr6": 0xFFFF0FF0})
    assert vcpu.get_debugregs()["db0"] == 0x1234 and vcpu.get_debugregs()["dr7"] == 0x401
    assert vcpu.get_xcrs()[0] & 1                              # XCR0.x87
    xsave = vcpu.get_xsave()
    assert len(xsave) == 4096
    vcpu.set_xsave(xsave)
    events = vcpu.get_vcpu_events()
    vcpu.set_vcpu_events(events)
    assert vcpu.get_vcpu_events() == events
    vcpu.nmi()
    assert vcpu.get_vcpu_events() != events                     # an NMI is now pending


def test_vcpu_threads_hand_back_exits_and_exceptions(vm, guest):
    from vmforge.accel.kvm.x86 import enter_real_mode

    mem = ram()
    mem.write(0x1000, guest("twocpu.S"))
    vm.map_memory(mem)
    cpus = [vm.create_vcpu(0), vm.create_vcpu(1)]
    enter_real_mode(cpus[0], 0x1000)
    enter_real_mode(cpus[1], 0x1100)

    class Fails:
        def pio_out(self, port, size, value):
            raise LookupError(value)

    threads = [cpus[0].start(Recorder()), cpus[1].start(Fails())]
    assert threads[0].result(60) is VcpuExit.HLT
    with pytest.raises(LookupError) as info:
        threads[1].result(60)
    assert info.value.args == (0xB1,)
    assert threads[1].name == "vcpu1"
