"""A fake format plugin's installed metadata, for the registry's probing tests."""

from __future__ import annotations

from pathlib import Path

from vmforge.plugins import MAGIC_GROUP, PROBE_GROUP


def fake_format_dist(root: Path, name: str, magics: list[str]) -> None:
    """A distribution ``name`` in ``root`` with a block driver, a probe and the probe
    magics ``magics`` (entry-point names as a plugin would declare them)."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n")
    (info / "entry_points.txt").write_text(
        f"[vmforge.block]\n{name} = {name}:Driver\n\n"
        f"[{PROBE_GROUP}]\n{name} = {name}.probe:probe\n\n"
        f"[{MAGIC_GROUP}]\n" + "".join(f"{m} = {name}.probe:probe\n" for m in magics))
