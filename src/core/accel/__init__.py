"""Accelerators: the software CPU (``interp``) and, later, KVM."""

from vmforge.accel.interp import RiscvHart, RunResult, StopReason

__all__ = ["RiscvHart", "RunResult", "StopReason"]
