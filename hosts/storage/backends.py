"""Storage backends: one class per pool type, declaring what its volumes can do.

Services, views, jobs and the create wizard ask the backend of a pool instead of testing its type:
which formats a new volume may have, whether a volume there can be a linked clone (a qcow2 overlay
on a template's image), whether volumes are thin, how a VM's disk names its source (a file, a block
device or a network volume), and a volume key that is pool + name rather than a path (RBD and iSCSI
volumes have no path). Adding a pool type is one new class here, registered with ``register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from django.conf import settings

from hosts.choices import PoolType
from panel.units import GIB


@dataclass(frozen=True)
class StorageBackend:
    """A pool type Paddock does not manage volumes in: it is listed, nothing more."""

    pool_type: ClassVar[str] = PoolType.OTHER
    label: ClassVar[str] = "other"
    #: volume formats a new volume may have; the first is the default. Empty: no volumes made here.
    formats: ClassVar[tuple[str, ...]] = ()
    #: a volume here may be a qcow2 overlay on a template's image (a linked clone)
    linked_clones: ClassVar[bool] = False
    #: volumes take space as they are written (sparse files, qcow2), not all at creation
    thin: ClassVar[bool] = False
    #: ``<disk type=...>`` of a VM disk on one of its volumes: ``file``, ``block`` or ``network``
    disk_source: ClassVar[str] = "file"
    #: the pool's size bounds a new volume's full size (no overcommit), not only what is written
    reserves_full_size: ClassVar[bool] = False
    #: libvirt's volume XML names a format here (files); LVM volumes have none
    names_format: ClassVar[bool] = True

    @property
    def manages_volumes(self) -> bool:
        return bool(self.formats)

    @property
    def default_format(self) -> str:
        return self.formats[0] if self.formats else ""

    def volume_key(self, pool_name: str, volume_name: str) -> str:
        """The volume's identity on its host: its pool and its name."""
        return f"{pool_name}/{volume_name}"

    def libvirt_format(self, fmt: str | None) -> str:
        """The format written in a new volume's XML for a volume of format ``fmt``."""
        return (fmt or "") if self.names_format else ""

    def unsupported_format(self, fmt: str | None) -> str:
        shown = " or ".join(sorted(self.formats, key=lambda f: (f != "raw", f)))
        return f"Unsupported volume format {fmt!r}: use {shown}."

    def format_problem(self, fmt: str | None, pool_name: str) -> str | None:
        """Why a new volume of format ``fmt`` cannot be made in this pool, or None."""
        if not self.formats:
            return (
                f"Pool {pool_name} is a {self.label} pool; Paddock manages volumes in "
                f"{', '.join(sorted(_managed_labels()))} pools only."
            )
        if fmt in (None, "") or fmt in self.formats:
            return None
        if self.formats == ("raw",):
            return (
                f"Pool {pool_name} is a {self.label} pool: its volumes are raw "
                f"{self.volume_noun}, not {fmt}."
            )
        return self.unsupported_format(fmt)

    volume_noun: ClassVar[str] = "volumes"

    def grows_on_demand(self, fmt: str | None) -> bool:
        """A new volume of format ``fmt`` here takes only what the guest writes (qcow2 in a
        thin pool); any other must have its full size free when it is made."""
        return self.thin and (fmt or self.default_format) == "qcow2"

    def abilities(self) -> dict:
        """What the create wizard's script needs to know of a pool, JSON-ready."""
        return {
            "pool_type": str(self.pool_type),
            "formats": list(self.formats),
            "linked_clones": self.linked_clones,
            "thin": self.thin,
            "disk_source": self.disk_source,
            "reserves_full_size": self.reserves_full_size,
        }


@dataclass(frozen=True)
class FilePoolBackend(StorageBackend):
    """Volumes are files in a directory: raw (sparse) or qcow2, qcow2 overlays possible."""

    formats: ClassVar[tuple[str, ...]] = ("qcow2", "raw")
    linked_clones: ClassVar[bool] = True
    thin: ClassVar[bool] = True
    disk_source: ClassVar[str] = "file"


@dataclass(frozen=True)
class DirBackend(FilePoolBackend):
    pool_type: ClassVar[str] = PoolType.DIR
    label: ClassVar[str] = "dir"


@dataclass(frozen=True)
class FsBackend(FilePoolBackend):
    pool_type: ClassVar[str] = PoolType.FS
    label: ClassVar[str] = "fs"


@dataclass(frozen=True)
class NetfsBackend(FilePoolBackend):
    pool_type: ClassVar[str] = PoolType.NETFS
    label: ClassVar[str] = "netfs"


@dataclass(frozen=True)
class LogicalBackend(StorageBackend):
    """An LVM volume group: volumes are raw logical volumes, allocated in full at creation."""

    pool_type: ClassVar[str] = PoolType.LOGICAL
    label: ClassVar[str] = "logical (LVM)"
    formats: ClassVar[tuple[str, ...]] = ("raw",)
    linked_clones: ClassVar[bool] = False
    thin: ClassVar[bool] = False
    disk_source: ClassVar[str] = "block"
    reserves_full_size: ClassVar[bool] = True
    names_format: ClassVar[bool] = False
    volume_noun: ClassVar[str] = "logical volumes"


@dataclass(frozen=True)
class UnmanagedBackend(StorageBackend):
    """A pool type without a backend (iSCSI, RBD, ZFS, ... until theirs land): listed, no
    volumes made in it; messages name its type."""

    type_name: str = ""

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.type_name or "unknown"


# --- the overcommit rule ------------------------------------------------------------------
#
# One rule for every new volume (the create wizard, the API, disk add, the pool's new volume):
# a full-size volume (raw, LVM, a full copy) must fit in the pool's free space now; a volume
# that grows on demand (qcow2 in a thin pool) may promise up to ``PADDOCK["THIN_OVERCOMMIT"]``
# times the free space (1.0 by default: no overcommit unless the operator asks for it). The
# simulated host never overcommits: libvirt's test driver reserves a volume's full size.


def _gib(size_bytes: float) -> str:
    return f"{size_bytes / GIB:.1f}".removesuffix(".0")


def thin_overcommit(pool) -> float:
    """How many times its free space a pool may promise to volumes that grow on demand."""
    host = getattr(pool, "host", None)
    if host is not None and getattr(host, "simulated", False):
        return 1.0
    ratio = float(getattr(settings, "PADDOCK", {}).get("THIN_OVERCOMMIT", 1.0) or 1.0)
    return max(ratio, 1.0)


def space_problem(pool, *, full_bytes: int = 0, thin_bytes: int = 0) -> str | None:
    """Why new volumes of ``full_bytes`` (full size now) and ``thin_bytes`` (growing on demand)
    do not fit in ``pool`` under the overcommit rule, naming the numbers; None when they fit."""
    ratio = thin_overcommit(pool)
    if full_bytes + thin_bytes / ratio <= pool.available:
        return None
    asked = full_bytes + thin_bytes
    message = f"{_gib(asked)} GiB asked, {_gib(pool.available)} GiB free on pool {pool.name}."
    if thin_bytes and ratio > 1:
        message += (
            f" Volumes that grow on demand may promise {ratio:g}x its free space "
            f"({_gib(pool.available * ratio)} GiB); full-size ones must fit in it."
        )
    return message


_BACKENDS: dict[str, StorageBackend] = {}


def register(backend: StorageBackend) -> StorageBackend:
    _BACKENDS[str(backend.pool_type)] = backend
    return backend


def _managed_labels() -> list[str]:
    return [b.label.split(" ")[0] for b in _BACKENDS.values() if b.manages_volumes]


def backend_for(pool_or_type) -> StorageBackend:
    """The backend of a pool (a ``StoragePool`` row, or its ``pool_type`` string)."""
    pool_type = str(getattr(pool_or_type, "pool_type", pool_or_type) or "")
    backend = _BACKENDS.get(pool_type)
    if backend is None:
        return UnmanagedBackend(type_name=pool_type)
    return backend


for _backend in (DirBackend(), FsBackend(), NetfsBackend(), LogicalBackend()):
    register(_backend)
