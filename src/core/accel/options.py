"""Options of ``-accel`` beyond the accelerator's name (light: the CLI parses them
before any machine code is imported)."""

from __future__ import annotations

__all__ = ["accel_thread_option"]


def accel_thread_option(text: str) -> str | None:
    """The ``thread=`` of an ``-accel`` argument (``interp,thread=multi``), as
    QEMU's tcg takes it: ``multi``, ``single`` or None (not given); ValueError
    with QEMU's wording for another value, or for ``thread=`` on another
    accelerator."""
    name, *props = text.split(",")
    value = None
    for prop in props:
        key, _, val = prop.partition("=")
        if key != "thread":
            continue
        if name != "interp":
            raise ValueError(f"-accel {text}: Property '{name}-accel.thread' not found")
        if val not in ("multi", "single"):
            raise ValueError(f"-accel {text}: Invalid 'thread' setting {val}")
        value = val
    return value
