"""Named stopping points for fault tests.

``PADDOCK_FAILPOINTS=vm.create.volumes_made`` makes a worker that reaches that point write the
point's name to ``PADDOCK_FAILPOINT_MARKER`` (if set) and stop there, so a test can kill it at
a known step. Unset (always, outside tests), a failpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def failpoint(name: str) -> None:
    points = os.environ.get("PADDOCK_FAILPOINTS")
    if not points or name not in points.split(","):
        return
    marker = os.environ.get("PADDOCK_FAILPOINT_MARKER")
    if marker:
        Path(marker).write_text(name)
    while True:  # until the test kills this process
        time.sleep(3600)
