"""QMP's migration commands over :mod:`vmforge.migration.live`, as QEMU 7.2 answers.

``migrate`` (``tcp:``, ``exec:``, ``file:``), ``migrate-incoming``,
``migrate_cancel``, ``query-migrate``, ``migrate-set-parameters`` /
``query-migrate-parameters`` (``downtime-limit`` and ``max-bandwidth`` act; the
others are kept and reported), ``migrate-set-capabilities`` /
``query-migrate-capabilities`` (``events`` turns the MIGRATION events on, as in
QEMU; capabilities vmforge lacks are refused by name).  The human monitor's
``migrate``, ``migrate_cancel`` and ``info migrate`` use the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmforge.migration.channel import MigrationError
from vmforge.migration.live import (
    cancel_migration,
    migration_info,
    start_incoming,
    start_migration,
)
from vmforge.qmp.commands import Command, QmpError, QmpSession

if TYPE_CHECKING:
    from vmforge.machine import Machine

__all__ = ["MIGRATION_COMMANDS", "hmp_info_migrate", "hmp_migrate", "hmp_migrate_cancel"]

#: QEMU 7.2's capabilities, in its order (query-migrate-capabilities)
CAPABILITIES = ("xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
                "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
                "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
                "late-block-activate", "x-ignore-shared", "validate-uuid",
                "background-snapshot", "zero-copy-send", "postcopy-preempt")
_SUPPORTED_CAPS = {"events", "zero-blocks"}

#: QEMU 7.2's parameters and defaults (query-migrate-parameters), as (type, default)
PARAMETERS: dict[str, tuple[str, Any]] = {
    "announce-initial": ("int", 50), "announce-max": ("int", 550),
    "announce-rounds": ("int", 5), "announce-step": ("int", 100),
    "compress-level": ("int", 1), "compress-threads": ("int", 8),
    "compress-wait-thread": ("bool", True), "decompress-threads": ("int", 2),
    "throttle-trigger-threshold": ("int", 50), "cpu-throttle-initial": ("int", 20),
    "cpu-throttle-increment": ("int", 10), "cpu-throttle-tailslow": ("bool", False),
    "tls-creds": ("string", ""), "tls-hostname": ("string", ""), "tls-authz": ("string", ""),
    "max-bandwidth": ("int", 134217728), "downtime-limit": ("int", 300),
    "x-checkpoint-delay": ("int", 20000), "block-incremental": ("bool", False),
    "multifd-channels": ("int", 2), "xbzrle-cache-size": ("int", 67108864),
    "max-postcopy-bandwidth": ("int", 0), "max-cpu-throttle": ("int", 99),
    "multifd-compression": ("string", "none"), "multifd-zlib-level": ("int", 1),
    "multifd-zstd-level": ("int", 1),
}
_MAX_DOWNTIME_MS = 2000 * 1000


def _values(machine: Machine) -> dict[str, Any]:
    info = migration_info(machine)
    values = info.parameters
    if not values:
        values.update((k, d) for k, (_t, d) in PARAMETERS.items())
    values["downtime-limit"] = info.params.downtime_limit
    values["max-bandwidth"] = info.params.max_bandwidth
    return values


def _query_migrate(s: QmpSession, a: dict[str, Any]) -> Any:
    return migration_info(s.machine).query()


def _migrate(s: QmpSession, a: dict[str, Any]) -> Any:
    for flag in ("blk", "inc"):
        if a.get(flag):
            raise QmpError("Block migration is not supported by vmforge: use shared storage, "
                           "or mirror the disk to the destination's NBD export "
                           "(nbd-server-add, drive-mirror)")
    if a.get("resume"):
        raise QmpError("Cannot resume if there is no paused migration")
    try:
        start_migration(s.machine, a["uri"])
    except (MigrationError, ValueError) as exc:
        raise QmpError(str(exc)) from None
    return {}


def _migrate_incoming(s: QmpSession, a: dict[str, Any]) -> Any:
    m = s.machine
    info = migration_info(m)
    if m.migration_runstate != "inmigrate":
        raise QmpError("'-incoming' was not specified on the command line")
    if info.thread is not None:
        raise QmpError("The incoming migration has already been started")
    try:
        start_incoming(m, a["uri"], autostart=not m.config.extra.get("no_autostart", False))
    except (MigrationError, ValueError) as exc:
        raise QmpError(str(exc)) from None
    return {}


def _migrate_cancel(s: QmpSession, a: dict[str, Any]) -> Any:
    cancel_migration(s.machine)
    return {}


def _set_parameters(s: QmpSession, a: dict[str, Any]) -> Any:
    for name, value in a.items():
        kind, _default = PARAMETERS[name]
        if kind == "int" and value < 0:
            raise QmpError(f"Parameter '{name.replace('-', '_')}' expects a non-negative value")
    if "downtime-limit" in a and a["downtime-limit"] > _MAX_DOWNTIME_MS:
        raise QmpError("Parameter 'downtime_limit' expects an integer in the range of 0 to "
                       "(2000 * 1000) ms")
    values = _values(s.machine)
    values.update(a)
    params = migration_info(s.machine).params
    params.downtime_limit = values["downtime-limit"]
    params.max_bandwidth = values["max-bandwidth"]
    return {}


def _query_parameters(s: QmpSession, a: dict[str, Any]) -> Any:
    return dict(_values(s.machine))


def _set_capabilities(s: QmpSession, a: dict[str, Any]) -> Any:
    info = migration_info(s.machine)
    if info.active:
        raise QmpError("There's a migration process in progress")
    changes = {}
    for item in a["capabilities"]:
        if not isinstance(item, dict) or not isinstance(item.get("capability"), str) \
                or not isinstance(item.get("state"), bool):
            raise QmpError("Invalid parameter type for 'capabilities', expected: object")
        name = item["capability"]
        if name not in CAPABILITIES:
            raise QmpError(f"Parameter 'capability' does not accept value '{name}'")
        if item["state"] and name not in _SUPPORTED_CAPS:
            raise QmpError(f"vmforge does not support the migration capability '{name}'")
        changes[name] = item["state"]
    if "events" in changes:
        info.events = changes["events"]
    info.capabilities.update(k for k, v in changes.items() if v)
    info.capabilities.difference_update(k for k, v in changes.items() if not v)
    return {}


def _query_capabilities(s: QmpSession, a: dict[str, Any]) -> Any:
    on = migration_info(s.machine).capabilities
    return [{"state": name in on, "capability": name} for name in CAPABILITIES]


MIGRATION_COMMANDS = [
    Command("migrate", _migrate, {"uri": ("string", True), "blk": ("bool", False),
                                  "inc": ("bool", False), "detach": ("bool", False),
                                  "resume": ("bool", False)}),
    Command("migrate-incoming", _migrate_incoming, {"uri": ("string", True)}),
    Command("migrate_cancel", _migrate_cancel),
    Command("query-migrate", _query_migrate),
    Command("migrate-set-parameters", _set_parameters,
            {k: (t, False) for k, (t, _d) in PARAMETERS.items()}),
    Command("query-migrate-parameters", _query_parameters),
    Command("migrate-set-capabilities", _set_capabilities, {"capabilities": ("array", True)}),
    Command("query-migrate-capabilities", _query_capabilities),
]


# -- the human monitor ------------------------------------------------------------------------

def hmp_migrate(machine: Machine, args: list[str]) -> str:
    """``migrate [-d] URI``: start migrating (the monitor returns at once)."""
    uri = [w for w in args if not w.startswith("-")]
    if len(uri) != 1:
        return "migrate: usage: migrate [-d] uri"
    try:
        start_migration(machine, uri[0])
    except (MigrationError, ValueError) as exc:
        return f"Error: {exc}"
    return ""


def hmp_migrate_cancel(machine: Machine, args: list[str]) -> str:
    cancel_migration(machine)
    return ""


def hmp_info_migrate(machine: Machine) -> str:
    """``info migrate``, the lines QEMU 7.2 prints for status and times."""
    q = migration_info(machine).query()
    if "status" not in q:
        return ""
    status = q["status"]
    if "error-desc" in q:
        status += f" ({q['error-desc']})"
    lines = [f"Migration status: {status}"]
    if "total-time" in q:
        lines.append(f"total time: {q['total-time']} ms")
    if "downtime" in q:
        lines.append(f"downtime: {q['downtime']} ms")
    if "expected-downtime" in q:
        lines.append(f"expected downtime: {q['expected-downtime']} ms")
    if "setup-time" in q:
        lines.append(f"setup: {q['setup-time']} ms")
    ram = q.get("ram")
    if ram:
        lines += [f"transferred ram: {ram['transferred'] >> 10} kbytes",
                  f"throughput: {ram['mbps']:.2f} mbps",
                  f"remaining ram: {ram['remaining'] >> 10} kbytes",
                  f"total ram: {ram['total'] >> 10} kbytes",
                  f"duplicate: {ram['duplicate']} pages",
                  f"normal: {ram['normal']} pages",
                  f"normal bytes: {ram['normal-bytes'] >> 10} kbytes",
                  f"dirty sync count: {ram['dirty-sync-count']}",
                  f"page size: {ram['page-size'] >> 10} kbytes"]
    return "\n".join(lines)
