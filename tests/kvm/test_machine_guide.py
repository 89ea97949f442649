"""The KVM board of docs/writing-a-machine.md runs as written: its guest prints
through the UART and ends through isa-debug-exit."""

from __future__ import annotations

from pathlib import Path

from vmforge.testing.docs import run_doc_example

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-machine.md"


def test_the_guide_board_runs(kvm, tmp_path: Path) -> None:
    proc = run_doc_example(DOC, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "console b'hi\\n', exit status 67\n"
