"""Ending a KVM machine's vCPU threads when a Ctrl-C came between making them and
starting the last of them: the threads that run are joined, the others dropped,
and the KeyboardInterrupt stays what the user sees (before: "cannot join thread
before it is started" came out as an internal error)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from vmforge.accel.kvm.machine import KvmMachine


class _Vcpu:
    def __init__(self) -> None:
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


def _thread(vcpu: _Vcpu) -> threading.Thread:
    t = threading.Thread(target=vcpu.stopped.wait, args=(30,), daemon=True)
    t.vcpu = vcpu  # type: ignore[attr-defined]
    return t


def test_vcpu_threads_not_started_yet_are_dropped_not_joined() -> None:
    running, never = _thread(_Vcpu()), _thread(_Vcpu())
    running.start()
    machine = SimpleNamespace(_threads=[running, never])
    KvmMachine._stop_vcpus(machine, quietly=True)  # type: ignore[arg-type]
    assert not running.is_alive(), "the started thread was stopped and joined"
    assert machine._threads == []
