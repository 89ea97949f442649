"""A hooks plugin that records the calls it gets."""
from vmforge.hookspecs import hookimpl

CALLS = []


@hookimpl
def vmforge_machine_shutdown(machine, reason):
    CALLS.append(("shutdown", machine, reason))


@hookimpl
def vmforge_add_options(parser, command):
    if command == "run":
        parser.add_argument("--from-hook", action="store_true", help="added by a hooks plugin")
