"""Make the cloop test helpers (``cloop_images``) importable, and give the
conformance kit its image builder (``pytest --vmforge-format cloop`` with this
folder on the command line)."""

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cloop_images import build_cloop

from vmforge.testing.builders import build_image_hook

# the kit's sizes are multiples of 512; a cloop disk is whole blocks
pytest_vmforge_build_image = build_image_hook("cloop", partial(build_cloop, block_size=512))
