"""A hooks plugin that records the calls it gets."""
from vmforge.hookspecs import hookimpl

CALLS = []


@hookimpl
def vmforge_machine_shutdown(machine, reason):
    CALLS.append(("shutdown", machine, reason))


@hookimpl
def vmforge_machine_halt(machine):
    if not any(c[0] == "halt" for c in CALLS):  # once is enough to know
        CALLS.append(("halt", machine))


@hookimpl
def vmforge_guest_panic(machine, info):
    CALLS.append(("panic", machine, info["status"]))


@hookimpl
def vmforge_add_options(parser, command):
    if command == "run":
        parser.add_argument("--from-hook", action="store_true", help="added by a hooks plugin")
