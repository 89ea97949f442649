"""The device authors' guide runs: its example device, its test snippet and its
conformance class are executed as written."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-virtio-device.md"


def _blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_guide_examples_run():
    blocks = [b for b in _blocks() if "machine." not in b]  # wiring needs a board
    assert len(blocks) == 3
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), scope)
    suite = scope["TestMyRng"]()
    checks = [n for n in dir(suite) if n.startswith("test_")]
    assert len(checks) >= 8
    for name in checks:
        getattr(suite, name)()


def test_guide_names_every_device_hook():
    text = PAGE.read_text(encoding="utf-8")
    for hook in ("device_features_bits", "config_bytes", "write_config", "on_notify",
                 "activate", "reset_device", "restart", "save_device_state",
                 "check_device_state", "apply_device_state", "run_in_thread",
                 "virtio_error", "config_changed", "notify_guest", "push_used"):
        assert re.search(rf"`[^`\n]*\b{hook}\b[^`\n]*`", text), hook
