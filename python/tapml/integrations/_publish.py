"""Publishing a directory a framework already wrote as a tapml checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import _core


def publish_tree(src: Path, step: int) -> None:
    """Publishes the files below ``src`` as the checkpoint of ``step``: hard links into the
    staging directory (no copy, and the framework may delete or rotate ``src`` afterwards),
    a copy where the filesystem cannot link."""
    # One process publishes a save the framework finished: no node-wide staging.
    with _core._checkpoint(step, node_shared=False) as stage:
        for dirpath, _, filenames in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            (stage / rel).mkdir(parents=True, exist_ok=True)
            for name in filenames:
                a, b = Path(dirpath) / name, stage / rel / name
                try:
                    os.link(a, b)
                except OSError:
                    shutil.copy2(a, b)
