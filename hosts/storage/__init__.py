"""Storage: what each pool type allows, and the volume operations Paddock performs on hosts.

- ``hosts.storage.backends``: one backend class per pool type (formats, linked clones, thin or
  thick, disk source, volume key); ``backend_for(pool or pool_type)`` is the question every
  service, view, job and the wizard asks instead of testing a pool's type.
- ``hosts.driver.storage``: the libvirt side (create, clone, grow, upload, delete, pool refresh,
  backing chains, lookups by path or by pool + name). Its public names are reached from here as
  they always were: ``from hosts import storage; storage.create_volume(conn, ...)``,
  ``storage.StorageError``, ``storage.InsufficientSpace``, ``storage.MAX_CHAIN_DEPTH``.

The operations are looked up on the driver module when first asked for (PEP 562), so either
module may be imported first: ``hosts.driver.storage`` itself imports the backends from here.
"""

from __future__ import annotations

from hosts.driver import storage as _driver

from .backends import (
    FilePoolBackend,
    LogicalBackend,
    StorageBackend,
    UnmanagedBackend,
    backend_for,
    register,
)

#: the names of ``hosts.driver.storage`` this package answers for
DRIVER_NAMES = (
    "GIB",
    "MAX_CHAIN_DEPTH",
    "InsufficientSpace",
    "StorageError",
    "backing_chain",
    "backing_depth",
    "clone_volume",
    "create_volume",
    "delete_volume",
    "grow_volume",
    "lookup_volume",
    "pool_state",
    "pool_type",
    "refresh_pool",
    "upload_volume",
    "volume_exists",
    "volume_key_of",
    "volume_name_for",
)

__all__ = [
    "FilePoolBackend",
    "LogicalBackend",
    "StorageBackend",
    "UnmanagedBackend",
    "backend_for",
    "register",
    *DRIVER_NAMES,
]


def __getattr__(name: str):
    if name in DRIVER_NAMES:
        return getattr(_driver, name)
    raise AttributeError(f"module 'hosts.storage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
