"""A hooks plugin with a misspelt hook name."""
from vmforge.hookspecs import hookimpl


@hookimpl
def vmforge_machine_shutdwn(machine, reason):
    pass
