"""A MIGRATION event goes out after the status it names is in place, as in QEMU
(migrate_set_state, then the event): a client that reads the event and then asks
``query-migrate`` sees that status, not the one before it."""

from __future__ import annotations

from typing import Any

from vmforge.migration.live import MigrationInfo, _set_status


class _Machine:
    def __init__(self, info: MigrationInfo) -> None:
        self.info = info
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def _state_changed(self, event: str, **data: Any) -> None:
        self.seen.append((data["status"], self.info.query()))


def test_query_at_event_time_shows_the_events_status() -> None:
    info = MigrationInfo()
    info.events = True
    machine = _Machine(info)
    for status in ("setup", "active", "device", "completed"):
        _set_status(machine, info, status)
    assert [s for s, _q in machine.seen] == ["setup", "active", "device", "completed"]
    for status, query in machine.seen:
        assert query["status"] == status
    done = machine.seen[-1][1]
    assert "downtime" in done and "expected-downtime" not in done
