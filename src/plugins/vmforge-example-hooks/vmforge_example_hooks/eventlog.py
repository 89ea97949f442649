"""``vmforge run --event-log PATH``: one JSON line per machine life-cycle event.

A template for hooks plugins: it adds an option to ``vmforge run``
(``vmforge_add_options``), reads it once the command line is parsed
(``vmforge_configure``), and records the machine's life cycle and the illegal
instructions its harts meet.  Hooks are for low-rate events only; nothing here
runs per instruction or per access.
"""

from __future__ import annotations

import time

from vmforge.hookspecs import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

_path: str | None = None


def _log(event: str, machine: Any, **fields: Any) -> None:
    if _path is None:
        return
    import json  # here: the plugin is imported by every ``vmforge run`` (start-up)

    record = {"time": round(time.time(), 3), "event": event,
              "machine": getattr(machine, "name", None), **fields}
    with open(_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


@hookimpl
def vmforge_add_options(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "run":
        parser.add_argument("--event-log", metavar="PATH", default=None,
                            help="append machine events as JSON lines (vmforge-example-hooks)")


@hookimpl
def vmforge_configure(args: argparse.Namespace, command: str) -> None:
    global _path
    _path = getattr(args, "event_log", None)


@hookimpl
def vmforge_machine_created(machine: Any) -> None:
    _log("created", machine, cpus=len(getattr(machine, "cpus", [])),
         memory=getattr(machine, "memory_size", None))


@hookimpl
def vmforge_machine_reset(machine: Any, reason: str) -> None:
    _log("reset", machine, reason=reason)


@hookimpl
def vmforge_machine_shutdown(machine: Any, reason: str, status: int) -> None:
    _log("shutdown", machine, reason=reason, status=status)


@hookimpl
def vmforge_guest_illegal_instruction(machine: Any, hart: Any, address: int,
                                      bits: int) -> bool | None:
    _log("illegal-instruction", machine, hart=hart.csr("mhartid"), address=address, bits=bits)
    return None                 # not emulated here: the guest takes its trap
