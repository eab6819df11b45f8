"""sysfs values: read, set and give back one file under ``/sys``, from an allow-list.

Only the paths in :data:`SYSFS_PATHS` are reachable, each with the values it accepts; the path
must be spelled normalized (no ``..``, no doubled slashes), so no name taken from input reaches
another file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from hosts.actions.base import ValueAction, register
from hosts.executor import ActionRefused, Executor, ExecutorError, allow_files

HUGEPAGE_SIZES_KIB = (2048, 1048576)
_NODE = r"node(?:0|[1-9][0-9]{0,3})"
_SIZE = r"hugepages-(?:2048|1048576)kB"
# A network interface name as the kernel allows it (at most 15 bytes, no "/"), but never "." or
# "..": it must start with a letter, digit or underscore.
_IFNAME = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}"
MAX_PAGES = 10_000_000


@dataclass(frozen=True)
class SysfsPath:
    """One family of sysfs files: which paths, what they hold, what may be written."""

    pattern: str
    what: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    writable: bool = True

    def matches(self, path: str) -> bool:
        return re.fullmatch(self.pattern, path) is not None

    def parse(self, text: str) -> int | str:
        """The value a read returned: an integer, or the selected word of a choice file
        (``always [madvise] never`` reads as ``madvise``)."""
        text = text.strip()
        if self.choices:
            selected = re.search(r"\[([^\]\s]+)\]", text)
            word = selected.group(1) if selected else text
            if word not in self.choices:
                raise ExecutorError(f"Unexpected content for {self.what}: {text[:80]!r}")
            return word
        if not re.fullmatch(r"[0-9]{1,19}", text):
            raise ExecutorError(f"Unexpected content for {self.what}: {text[:80]!r}")
        return int(text)

    def clean(self, value: Any) -> int | str:
        """``value`` as written to this file, or :class:`ActionRefused`."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ActionRefused(
                    f"{self.what}: {value!r} is not one of " + ", ".join(self.choices) + "."
                )
            return value
        if isinstance(value, bool):
            raise ActionRefused(f"{self.what}: give a whole number, not {value!r}.")
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
            value = int(value)
        if not isinstance(value, int):
            raise ActionRefused(f"{self.what}: {value!r} is not a whole number.")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise ActionRefused(f"{self.what}: {value} is outside {self.minimum}..{self.maximum}.")
        return value


SYSFS_PATHS: tuple[SysfsPath, ...] = (
    SysfsPath(
        r"/sys/kernel/mm/transparent_hugepage/enabled",
        "transparent hugepages mode",
        choices=("always", "madvise", "never"),
    ),
    SysfsPath(
        r"/sys/kernel/mm/transparent_hugepage/defrag",
        "transparent hugepages defrag mode",
        choices=("always", "defer", "defer+madvise", "madvise", "never"),
    ),
    SysfsPath(
        rf"/sys/kernel/mm/hugepages/{_SIZE}/nr_hugepages",
        "hugepages reserved",
        minimum=0,
        maximum=MAX_PAGES,
    ),
    SysfsPath(
        rf"/sys/devices/system/node/{_NODE}/hugepages/{_SIZE}/nr_hugepages",
        "hugepages reserved on a NUMA node",
        minimum=0,
        maximum=MAX_PAGES,
    ),
    SysfsPath(
        rf"/sys/kernel/mm/hugepages/{_SIZE}/free_hugepages", "free hugepages", writable=False
    ),
    SysfsPath(
        rf"/sys/devices/system/node/{_NODE}/hugepages/{_SIZE}/free_hugepages",
        "free hugepages on a NUMA node",
        writable=False,
    ),
    SysfsPath(r"/sys/kernel/mm/ksm/run", "KSM run state", minimum=0, maximum=2),
    SysfsPath(
        r"/sys/module/kvm/parameters/halt_poll_ns",
        "KVM halt polling (ns)",
        minimum=0,
        maximum=2**31 - 1,
    ),
    SysfsPath(rf"/sys/class/net/{_IFNAME}/mtu", "interface MTU", minimum=68, maximum=65535),
    SysfsPath(
        rf"/sys/class/net/{_IFNAME}/device/sriov_numvfs",
        "SR-IOV virtual functions",
        minimum=0,
        maximum=4096,
    ),
)

allow_files((spec.pattern for spec in SYSFS_PATHS), writable=False)
allow_files((spec.pattern for spec in SYSFS_PATHS if spec.writable), writable=True)


def sysfs_path(path: Any) -> SysfsPath:
    """The allow-list entry for ``path``, or :class:`ActionRefused`."""
    if not isinstance(path, str) or not path:
        raise ActionRefused("A sysfs path is required.")
    if "\x00" in path or not path.startswith("/sys/") or os.path.normpath(path) != path:
        raise ActionRefused(f"{path[:200]!r} is not a normalized path under /sys.")
    for spec in SYSFS_PATHS:
        if spec.matches(path):
            return spec
    raise ActionRefused(f"{path[:200]!r} is not a sysfs file host actions may touch.")


@register
class SysfsValue(ValueAction):
    """One sysfs file: ``SysfsValue(path)`` checks it, ``SysfsValue(path, value)`` sets it."""

    kind = "sysfs.value"

    def __init__(self, path: str, value: int | str | None = None):
        self.spec = sysfs_path(path)
        self.path = path
        if value is not None and not self.spec.writable:
            raise ActionRefused(f"{path} is read-only.")
        self.value = None if value is None else self.spec.clean(value)

    def describe(self) -> str:
        return self.path

    def params(self) -> dict:
        return {"path": self.path, "value": self.value}

    def read(self, ex: Executor) -> int | str:
        return self.spec.parse(ex.read_file(self.path))

    def write(self, ex: Executor, value: int | str) -> None:
        ex.write_file(self.path, str(self.spec.clean(value)))


@register
class Hugepages(SysfsValue):
    """Hugepages of one size reserved on the host (``node`` None) or on one NUMA node."""

    kind = "sysfs.hugepages"

    def __init__(self, count: int | None = None, size_kib: int = 2048, node: int | None = None):
        if isinstance(size_kib, bool) or size_kib not in HUGEPAGE_SIZES_KIB:
            raise ActionRefused(
                f"Hugepage size {size_kib!r} KiB is not one of "
                + ", ".join(str(s) for s in HUGEPAGE_SIZES_KIB)
                + "."
            )
        if node is None:
            path = f"/sys/kernel/mm/hugepages/hugepages-{size_kib}kB/nr_hugepages"
        elif isinstance(node, int) and not isinstance(node, bool) and 0 <= node <= 9999:
            path = (
                f"/sys/devices/system/node/node{node}/hugepages/hugepages-{size_kib}kB/nr_hugepages"
            )
        else:
            raise ActionRefused(f"NUMA node {node!r} is not a node number.")
        super().__init__(path, count)
        self.size_kib = size_kib
        self.node = node

    def describe(self) -> str:
        where = "host" if self.node is None else f"node {self.node}"
        return f"hugepages-{self.size_kib}kB on {where}"

    def params(self) -> dict:
        return {"count": self.value, "size_kib": self.size_kib, "node": self.node}
