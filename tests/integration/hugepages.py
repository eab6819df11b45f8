"""Real 2 MiB hugepages for a test: one test at a time on this machine, and given back after.

Several test processes may share the machine (parallel checkouts): the fixture holds an
exclusive ``flock`` while the test reserves pages, so two of them never count each other's.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

NR_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
NODE0_2M = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")
LOCK = Path("/tmp/paddock-hugepages.lock")


def pages() -> int:
    return int(NR_2M.read_text())


@pytest.fixture
def hugepages_given_back():
    """The machine's 2 MiB hugepage count before the test, written back after it."""
    if not NR_2M.exists():
        pytest.skip("this kernel has no 2 MiB hugepages")
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        original = pages()
        try:
            yield original
        finally:
            if pages() != original:
                NR_2M.write_text(f"{original}\n")
        assert pages() == original
