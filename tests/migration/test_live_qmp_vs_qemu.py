"""The migration QMP conversation with vmforge and with QEMU 7.2 (``qemu-system-riscv64
-M virt`` migrating to itself on loopback), through the ``qemu.qmp`` client: the
replies have the same keys and JSON types, the events the same names, order and
data, the errors the same text."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "qmp"))
from qmpkit import SPIN, connect, error_of, shape

from vmforge.testing.migration_kit import free_port
from vmforge.testing.oracles import require_program


def _argv(kind: str, where: Path, name: str, extra: list[str]) -> list[str]:
    kernel = where / "spin.bin"
    kernel.write_bytes(SPIN)
    common = ["-bios", "none", "-kernel", str(kernel), "-m", "64", "-display", "none",
              "-serial", "null", "-qmp", f"unix:{where / name},server=on,wait=off", *extra]
    if kind == "qemu":
        return [require_program("qemu-system-riscv64", "qemu-system-misc"), "-M", "virt",
                "-monitor", "none", *common]
    return [str(Path(sys.executable).with_name("vmforge")), "run", "-M", "riscv-virt", *common]


async def _client(sock: Path) -> Any:
    deadline = time.monotonic() + 30
    while not sock.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sock} never appeared")
        await asyncio.sleep(0.05)
    return await connect(sock)


async def _events(client: Any, until: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events up to and including MIGRATION with status ``until``."""
    import json

    out: list[dict[str, Any]] = []
    while True:
        msg = json.loads(bytes(await asyncio.wait_for(client.events.get(), timeout)))
        out.append(msg)
        if msg["event"] == "MIGRATION" and msg["data"]["status"] == until:
            return out


async def _until(client: Any, status: str) -> dict[str, Any]:
    for _ in range(600):
        info = await client.execute("query-migrate")
        if info.get("status") == status:
            return dict(info)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"never {status}: {info}")


async def _conversation(kind: str, where: Path) -> dict[str, Any]:
    port = free_port()
    procs = [subprocess.Popen(_argv(kind, where, "src.qmp", []), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(_argv(kind, where, "dst.qmp",
                                    ["-incoming", f"tcp:127.0.0.1:{port}"]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    out: dict[str, Any] = {}
    try:
        src, dst = await _client(where / "src.qmp"), await _client(where / "dst.qmp")
        out["dst-status-before"] = await dst.execute("query-status")
        out["dst-migrate-before"] = await dst.execute("query-migrate")
        out["src-migrate-before"] = await src.execute("query-migrate")
        out["parameters"] = await src.execute("query-migrate-parameters")
        out["capabilities"] = await src.execute("query-migrate-capabilities")
        out["err-downtime"] = await error_of(src, "migrate-set-parameters",
                                             {"downtime-limit": 2000001})
        out["err-incoming"] = await error_of(src, "migrate-incoming",
                                             {"uri": f"tcp:127.0.0.1:{port}"})
        on = {"capabilities": [{"capability": "events", "state": True}]}
        for client in (src, dst):
            await client.execute("migrate-set-capabilities", on)
        await src.execute("migrate-set-parameters", {"downtime-limit": 300})
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        out["src-events"] = await _events(src, "completed")
        out["dst-events"] = await _events(dst, "completed")
        out["src-migrate-done"] = await src.execute("query-migrate")
        out["src-status-done"] = await src.execute("query-status")
        out["dst-status-done"] = await dst.execute("query-status")
        out["dst-migrate-done"] = await dst.execute("query-migrate")
        out["err-again"] = await error_of(src, "migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        await src.execute("cont")
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{free_port()}"})
        out["src-migrate-failed"] = await _until(src, "failed")
        out["src-status-failed"] = await src.execute("query-status")
        for client in (src, dst):
            await client.disconnect()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    qemu = asyncio.run(_conversation("qemu", tmp_path_factory.mktemp("qemu")))
    mine = asyncio.run(_conversation("vmforge", tmp_path_factory.mktemp("vmforge")))
    return mine, qemu


SAME_SHAPE = ["dst-status-before", "dst-migrate-before", "src-migrate-before", "parameters",
              "capabilities", "src-migrate-done", "src-status-done", "dst-status-done",
              "dst-migrate-done", "src-migrate-failed", "src-status-failed"]


@pytest.mark.parametrize("key", SAME_SHAPE)
def test_reply_shapes_match_qemu(both: tuple[dict[str, Any], dict[str, Any]], key: str) -> None:
    mine, qemu = both[0][key], both[1][key]
    assert shape(mine) == shape(qemu)
    if "status" in qemu and isinstance(qemu["status"], str):
        assert mine["status"] == qemu["status"]


def test_errors_match_qemu(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for key in ("err-downtime", "err-incoming", "err-again"):
        assert both[0][key] == both[1][key], key


def test_failed_migration_reason_matches_qemu(both: tuple[dict[str, Any], dict[str, Any]]
                                              ) -> None:
    mine, qemu = both[0]["src-migrate-failed"], both[1]["src-migrate-failed"]
    assert mine["error-desc"].split("'")[0] == qemu["error-desc"].split("'")[0]
    assert mine["error-desc"].endswith("Connection refused")


def _names(events: list[dict[str, Any]]) -> list[str]:
    """Event names with MIGRATION's status; MIGRATION_PASS left out (its count
    depends on how many rounds each pre-copy took)."""
    return [e["event"] + (f":{e['data']['status']}" if e["event"] == "MIGRATION" else "")
            for e in events if e["event"] != "MIGRATION_PASS"]


def test_events_match_qemu(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for side in ("src-events", "dst-events"):
        mine, qemu = both[0][side], both[1][side]
        assert _names(mine) == _names(qemu), side
        passes = [e for e in mine if e["event"] == "MIGRATION_PASS"]
        qpasses = [e for e in qemu if e["event"] == "MIGRATION_PASS"]
        assert [e["data"]["pass"] for e in passes] == list(range(1, len(passes) + 1))
        assert bool(passes) == bool(qpasses)
        for a, b in zip(passes[:1], qpasses[:1], strict=True):
            assert shape(a) == shape(b)
