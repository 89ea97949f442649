"""QEMU's older way of migrating non-shared storage (``migrate`` with ``blk``/``inc``,
the ``block`` capability) is refused by name, pointing at the NBD way; the guest runs on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.qmp.qmpkit import connect, error_of, start_vmforge, stop_guest


async def _refusals(sock: Path) -> dict[str, object]:
    c = await connect(sock)
    out: dict[str, object] = {
        "blk": await error_of(c, "migrate", {"uri": "tcp:127.0.0.1:1", "blk": True}),
        "inc": await error_of(c, "migrate", {"uri": "tcp:127.0.0.1:1", "inc": True}),
        "cap": await error_of(c, "migrate-set-capabilities", {
            "capabilities": [{"capability": "block", "state": True}]}),
        "status": await c.execute("query-status"),
        "migrate": await c.execute("query-migrate"),
    }
    await c.disconnect()
    return out


def test_block_migration_refused_by_name(tmp_path: Path) -> None:
    guest = start_vmforge(tmp_path)
    try:
        out = asyncio.run(_refusals(guest.sock))
    finally:
        stop_guest(guest)
    for key in ("blk", "inc"):
        err = out[key]
        assert isinstance(err, dict) and err["class"] == "GenericError"
        assert err["desc"].startswith("Block migration is not supported by vmforge")
        assert "NBD" in err["desc"]
    assert out["cap"] == {"class": "GenericError",
                          "desc": "vmforge does not support the migration capability 'block'"}
    assert out["status"] == {"status": "running", "singlestep": False, "running": True}
    assert out["migrate"] == {}
