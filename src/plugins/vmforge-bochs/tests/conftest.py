"""Make the bochs test helpers (``bochs_images``) importable, and give the
conformance kit its image builder (``pytest --vmforge-format bochs`` with this
folder on the command line)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bochs_images import build_bochs

from vmforge.testing.builders import build_image_hook

pytest_vmforge_build_image = build_image_hook("bochs", build_bochs)
