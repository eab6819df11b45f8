"""The libvirt side of storage: volume create, clone, grow, upload, delete, pool refresh,
backing chains, volume lookups by path or by pool + name.

Pure functions over a connection from ``hosts.driver.connection.get_connection`` (or a raw
``libvirt.virConnect``; no models, no database): tasks write the returned dicts (``parse_volume``
fields plus ``backing_depth``) into the inventory. What a pool type allows (formats, linked
clones, thick volumes) is asked of its backend (``hosts.storage.backends.backend_for``). Every
refusal is a ``StorageError`` whose message can be shown as it is, in a task's error or an API
400. Callers reach these functions as ``hosts.storage.<name>`` (the package re-exports them).

libvirt 9 behaviours this module relies on or works around (see also ``hosts/volxml.py``):

- A directory pool sees files that others created only after ``pool.refresh``; refresh fails
  with "pool has asynchronous jobs running" while a volume in it is being built (a full clone, a
  preallocated volume). The pool's figures are then still current for libvirt's own volumes, so
  this module falls back to them instead of failing.
- ``vol.delete`` removes a base image that overlays still use, without a word: the check for
  overlays (and for domains using the volume) is Paddock's.
- ``vol.resize`` without the SHRINK flag refuses to shrink; raw files stay sparse when grown.
- An upload stream that ends early is finished without an error (the rest of the volume keeps
  its old content) and one that carries too much fails only at the end of the volume: the byte
  count is checked here.
- Directory pools probe the format of a file's content, but only on a pool refresh (libvirt
  starts one in the background when an upload stream closes, so the volume XML read right after
  ``finish`` may still show the old format). A "raw" upload that holds a qcow2 image with a
  backing file is then reported as qcow2 on top of that file, which would give the uploader's VM
  the content of any image on the host. Uploads are checked twice: their header as it streams
  (stopped before the rest is sent), and libvirt's view after a synchronous refresh.
- ``vol.resize`` on a disk of a running VM fails for qcow2 (QEMU holds the image's write lock)
  and "succeeds" for raw while the guest keeps the old size; only ``virDomain.blockResize``
  grows a disk in use.
- Volume XML names only the first backing file; the chain is followed volume by volume.
- ``createXMLFrom`` flattens the source's backing chain into the copy and takes the source from
  any pool on the host; it blocks for the whole copy (run it in a task).
"""

from __future__ import annotations

import logging
import posixpath
import struct
import time
from collections.abc import Iterable

import libvirt

from hosts.choices import PoolState
from hosts.driver import deadline
from hosts.driver.connection import call_deadline, give_up
from hosts.driver.errors import HostCallTimeout
from hosts.poolxml import parse_pool, parse_volume
from hosts.storage.backends import StorageBackend, backend_for
from hosts.volxml import build_volume_xml, check_volume_name
from panel.units import GIB
from panel.validators import NAME_RE
from panel.xmlutil import parse

logger = logging.getLogger(__name__)


MAX_CHAIN_DEPTH = 8  # images in a linked clone's chain, the clone included
_CHAIN_WALK_LIMIT = 64  # a chain longer than this is broken, not deep
_EXTENSIONS = {"qcow2": ".qcow2", "raw": ".raw", "": ""}
# Source formats a clone can start from; libvirt reports an ISO 9660 image as "iso" (raw data).
_CLONABLE = ("raw", "iso", "qcow2")


class StorageError(Exception):
    """A volume operation was refused or failed; the message says why, for people."""


class InsufficientSpace(StorageError):
    """The pool has less space available than the operation needs."""


# --- helpers ----------------------------------------------------------------------------------


def _message(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def _gib(size: int) -> str:
    value = size / GIB
    text = f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.6f}"
    text = text.rstrip("0").rstrip(".")
    return f"{text or '0'} GiB"


def _check_name(name: object) -> str:
    try:
        return check_volume_name(name)
    except ValueError as exc:
        raise StorageError(str(exc)) from None


def _check_size(size: object, what: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise StorageError(f"The {what} must be a whole number of bytes, not {size!r}.")
    if size <= 0:
        raise StorageError(f"The {what} must be more than 0 bytes, not {size}.")
    return size


def _check_path(path: object) -> str:
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or any(ord(ch) < 32 or ch == "\x7f" for ch in path)
    ):
        raise StorageError(f"{path!r} is not an absolute volume path.")
    return path


def _pool(conn: libvirt.virConnect, pool_name: object) -> libvirt.virStoragePool:
    if not isinstance(pool_name, str) or not pool_name:
        raise StorageError("A pool name is required.")
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise StorageError(f"Pool {pool_name} does not exist on this host.") from None
        raise StorageError(f"Could not look up pool {pool_name}: {_message(exc)}") from None
    try:
        active = pool.isActive()
    except libvirt.libvirtError as exc:
        raise StorageError(
            f"Could not read the state of pool {pool_name}: {_message(exc)}"
        ) from None
    if not active:
        raise StorageError(f"Pool {pool_name} is not active; start it first.")
    return pool


def pool_type(pool: libvirt.virStoragePool) -> str:
    """The pool's type as libvirt names it (``dir``, ``logical``, ``rbd``, ...)."""
    try:
        return parse(pool.XMLDesc(0)).get("type", "")
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not read pool {pool.name()}: {_message(exc)}") from None


def _backend(pool: libvirt.virStoragePool) -> StorageBackend:
    """The pool's backend; pool types Paddock manages no volumes in are refused."""
    backend = backend_for(pool_type(pool))
    if not backend.manages_volumes:
        raise StorageError(backend.format_problem(None, pool.name()))
    return backend


def _format_for(pool: libvirt.virStoragePool, backend: StorageBackend, fmt: object) -> str:
    """The format libvirt is given for a new volume of format ``fmt`` in the pool."""
    if fmt in (None, "") and backend.names_format:
        problem = backend.unsupported_format(fmt)
    else:
        problem = backend.format_problem(fmt, pool.name())
    if problem:
        raise StorageError(problem)
    return backend.libvirt_format(fmt)


def _refresh(pool: libvirt.virStoragePool) -> bool:
    try:
        pool.refresh(0)
    except libvirt.libvirtError as exc:
        # Refused while a volume is being built in the pool; libvirt's figures stay current for
        # its own volumes, only files created behind its back are not seen yet.
        logger.debug("pool %s not refreshed: %s", pool.name(), _message(exc))
        return False
    return True


def _available(pool: libvirt.virStoragePool) -> int:
    try:
        return parse_pool(pool.XMLDesc(0))["available"]
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not read pool {pool.name()}: {_message(exc)}") from None


def _check_space(pool: libvirt.virStoragePool, needed: int) -> None:
    available = _available(pool)
    if needed > available:
        raise InsufficientSpace(
            f"Not enough space in pool {pool.name()}: requested {_gib(needed)}, "
            f"available {_gib(available)}."
        )


def _check_absent(pool: libvirt.virStoragePool, name: str) -> None:
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return
        raise StorageError(f"Could not look up volume {name}: {_message(exc)}") from None
    raise StorageError(f"A volume named {name} already exists in pool {pool.name()}.")


def _build(name: str, capacity: int, fmt: str, **kwargs) -> str:
    try:
        return build_volume_xml(name, capacity, fmt, **kwargs)
    except ValueError as exc:
        raise StorageError(str(exc)) from None


def _created(pool: libvirt.virStoragePool, name: str, call, *args) -> libvirt.virStorageVol:
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
            raise StorageError(
                f"A volume named {name} already exists in pool {pool.name()}."
            ) from None
        raise StorageError(
            f"Could not create volume {name} in pool {pool.name()}: {_message(exc)}"
        ) from None


def _lookup_path(
    conn: libvirt.virConnect, path: str, *, missing_ok: bool = False
) -> libvirt.virStorageVol | None:
    _check_path(path)
    for attempt in (1, 2):
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise StorageError(
                    f"Could not look up the volume at {path}: {_message(exc)}"
                ) from None
        if attempt == 1 and not _refresh_pools_holding(conn, path):
            break
    if missing_ok:
        return None
    raise StorageError(f"There is no volume at {path} on this host.")


def _refresh_pools_holding(conn: libvirt.virConnect, path: str) -> bool:
    """Refresh the active pools whose directory holds ``path`` (a file libvirt has not seen
    yet); False when there is none."""
    directory = posixpath.dirname(posixpath.normpath(path))
    refreshed = False
    for pool in _active_pools(conn):
        try:
            target = parse_pool(pool.XMLDesc(0))["path"]
        except libvirt.libvirtError:
            continue
        if target and posixpath.normpath(target) == directory:
            _refresh(pool)
            refreshed = True
    return refreshed


def _active_pools(conn: libvirt.virConnect) -> list[libvirt.virStoragePool]:
    try:
        return conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not list the host's storage pools: {_message(exc)}") from None


def _volume_xml(vol: libvirt.virStorageVol) -> dict:
    try:
        return parse_volume(vol.XMLDesc(0))
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not read volume {vol.name()}: {_message(exc)}") from None


def _describe(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> dict:
    info = _volume_xml(vol)
    info["backing_depth"] = backing_depth(conn, info["path"]) if info["backing_path"] else 1
    return info


def _discard(vol: libvirt.virStorageVol) -> bool:
    """Delete a partial volume; False when that failed (logged)."""
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            logger.warning("could not delete partial volume %s: %s", vol.name(), _message(exc))
            return False
    return True


# --- public API -------------------------------------------------------------------------------

_POOL_STATES = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: PoolState.INACTIVE,
    libvirt.VIR_STORAGE_POOL_BUILDING: PoolState.BUILDING,
    libvirt.VIR_STORAGE_POOL_RUNNING: PoolState.ACTIVE,
    libvirt.VIR_STORAGE_POOL_DEGRADED: PoolState.DEGRADED,
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: PoolState.INACCESSIBLE,
}


def pool_state(pool: libvirt.virStoragePool) -> str:
    """The pool's state as a ``PoolState`` value (raises ``DriverError`` as libvirt does)."""
    return _POOL_STATES.get(pool.info()[0], PoolState.INACTIVE)


def refresh_pool(conn: libvirt.virConnect, pool_name: str) -> bool:
    """Re-read the pool's volumes on the host; False when libvirt refused (a volume is being
    built there: its figures are still current for libvirt's own volumes)."""
    return _refresh(_pool(conn, pool_name))


def lookup_volume(
    conn: libvirt.virConnect, pool_name: str, name: str, *, missing_ok: bool = False
) -> dict | None:
    """The volume ``name`` of pool ``pool_name`` (``parse_volume`` fields plus ``key``, its
    backend's ``volume_key``), looked up by pool + name: the way to find volumes that have no
    path (RBD, iSCSI). None when there is none and ``missing_ok``."""
    name = _check_name(name)
    pool = _pool(conn, pool_name)
    try:
        vol = pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise StorageError(f"Could not look up volume {name}: {_message(exc)}") from None
        if missing_ok:
            return None
        raise StorageError(f"There is no volume {name} in pool {pool_name}.") from None
    info = _volume_xml(vol)
    info["key"] = backend_for(pool_type(pool)).volume_key(pool_name, info["name"])
    return info


def volume_exists(conn: libvirt.virConnect, pool_name: str, name: str) -> bool:
    """Whether pool ``pool_name`` holds a volume ``name``."""
    return lookup_volume(conn, pool_name, name, missing_ok=True) is not None


def volume_key_of(conn: libvirt.virConnect, path: str) -> str:
    """The pool + name key (``backend.volume_key``) of the volume at ``path``."""
    vol = _lookup_path(conn, path)
    try:
        pool = vol.storagePoolLookupByVolume()
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not find the pool of {vol.name()}: {_message(exc)}") from None
    return backend_for(pool_type(pool)).volume_key(pool.name(), vol.name())


def volume_name_for(vm_name: str, index: int, fmt: str) -> str:
    """The volume name of a VM's disk: ``web-01-disk0.qcow2``, ``web-01-disk1.raw``, or
    ``web-01-disk0`` for a logical volume (``fmt=""``)."""
    if not isinstance(vm_name, str) or not NAME_RE.fullmatch(vm_name):
        raise StorageError(
            f"Invalid VM name {vm_name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1000:
        raise StorageError(f"The disk index must be a number from 0 to 999, not {index!r}.")
    if fmt not in _EXTENSIONS:
        raise StorageError(f"Unsupported volume format {fmt!r}: use raw, qcow2 or '' (LVM).")
    return _check_name(f"{vm_name}-disk{index}{_EXTENSIONS[fmt]}")


def create_volume(
    conn: libvirt.virConnect, pool_name: str, name: str, size_bytes: int, fmt: str
) -> dict:
    """A new empty volume: raw (sparse) or qcow2 (v3) in a directory pool, a raw LV in a
    logical pool (``fmt`` ``""`` or ``"raw"``)."""
    return _describe(conn, _create(conn, pool_name, name, size_bytes, fmt))


def _create(
    conn: libvirt.virConnect, pool_name: str, name: str, size_bytes: int, fmt: str
) -> libvirt.virStorageVol:
    name = _check_name(name)
    size = _check_size(size_bytes)
    pool = _pool(conn, pool_name)
    fmt = _format_for(pool, _backend(pool), fmt)
    _refresh(pool)
    _check_absent(pool, name)
    _check_space(pool, size)
    allocation = 0 if fmt == "raw" else None
    xml = _build(name, size, fmt, allocation=allocation)
    return _created(pool, name, pool.createXML, xml, 0)


def clone_volume(
    conn: libvirt.virConnect,
    pool_name: str,
    source_path: str,
    name: str,
    mode: str,
    *,
    fmt: str | None = None,
) -> dict:
    """Clone the volume at ``source_path`` (any pool on this host) into ``pool_name``.

    ``mode="linked"``: a qcow2 overlay of the same capacity on top of the source, which must
    then stay unchanged; refused when the chain would hold more than ``MAX_CHAIN_DEPTH`` images.
    ``mode="full"``: an independent copy (the source's chain flattened), in the source's format
    unless ``fmt`` is given.
    """
    name = _check_name(name)
    if mode not in ("linked", "full"):
        raise StorageError(f"Unknown clone mode {mode!r}: use linked or full.")
    pool = _pool(conn, pool_name)
    backend = _backend(pool)
    source = _lookup_path(conn, source_path)
    src = _volume_xml(source)
    src_format = src["format"] or "raw"  # logical volumes report no format: they are raw
    if src_format not in _CLONABLE:
        raise StorageError(
            f"{src['name']} is a {src_format} image; only raw and qcow2 volumes can be cloned."
        )
    src_format = "qcow2" if src_format == "qcow2" else "raw"
    if src["capacity"] <= 0:
        raise StorageError(f"{src['name']} reports no capacity; refresh its pool and retry.")
    _refresh(pool)
    _check_absent(pool, name)

    if mode == "linked":
        if not backend.linked_clones:
            raise StorageError(
                f"Pool {pool.name()} is a {backend.label} pool; a linked clone is a qcow2 file, "
                "so it needs a directory pool. Use a full clone instead."
            )
        if fmt not in (None, "qcow2"):
            raise StorageError(f"A linked clone is always qcow2, not {fmt}.")
        depth = 1 + backing_depth(conn, source.path())
        if depth > MAX_CHAIN_DEPTH:
            raise StorageError(
                f"A linked clone of {src['name']} would make a chain of {depth} images; the "
                f"limit is {MAX_CHAIN_DEPTH}. Make a full clone instead."
            )
        xml = _build(
            name,
            src["capacity"],
            "qcow2",
            backing_path=source.path(),
            backing_format=src_format,
        )
        return _describe(conn, _created(pool, name, pool.createXML, xml, 0))

    target_format = _format_for(pool, backend, fmt if fmt is not None else src_format)
    if backend.reserves_full_size:
        needed = src["capacity"]  # a thick volume (an LV)
    else:
        needed = min(src["capacity"], _chain_allocation(conn, source.path(), src["capacity"]))
    _check_space(pool, needed)
    allocation = 0 if target_format == "raw" else None
    xml = _build(name, src["capacity"], target_format, allocation=allocation)
    return _describe(conn, _created(pool, name, pool.createXMLFrom, xml, source, 0))


def _chain_allocation(conn: libvirt.virConnect, path: str, capacity: int) -> int:
    """The bytes a flattened copy of the chain may take: what its images hold, at most."""
    total = 0
    for link in backing_chain(conn, path):
        vol = _lookup_path(conn, link, missing_ok=True)
        total += _volume_xml(vol)["allocation"] if vol is not None else capacity
    return total


def delete_volume(conn: libvirt.virConnect, path: str) -> bool:
    """Delete the volume at ``path``; False when there is none (already deleted).

    Refused while another volume on the host uses it as its backing file or a domain uses it as
    a disk (or in a disk's backing chain).
    """
    vol = _lookup_path(conn, path, missing_ok=True)
    if vol is None:
        return False
    real = vol.path()
    name = vol.name()
    overlays = _overlays_of(conn, real)
    if overlays:
        shown = ", ".join(overlays[:5]) + (
            f" and {len(overlays) - 5} more" if len(overlays) > 5 else ""
        )
        raise StorageError(
            f"{name} is still used as the base image of {shown}; delete those volumes first."
        )
    domains = _domains_using(conn, vol, real)
    if domains:
        raise StorageError(
            f"{name} is still a disk of VM {', '.join(domains)}; detach it or delete the VM first."
        )
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise StorageError(f"Could not delete volume {name}: {_message(exc)}") from None
    return True


def _overlays_of(conn: libvirt.virConnect, path: str) -> list[str]:
    """``name (pool P)`` of every volume on the host whose backing file is ``path``."""
    target = posixpath.normpath(path)
    found = []
    for pool in _active_pools(conn):
        _refresh(pool)
        try:
            volumes = pool.listAllVolumes(0)
        except libvirt.libvirtError as exc:
            raise StorageError(
                f"Could not list the volumes of pool {pool.name()}: {_message(exc)}"
            ) from None
        for vol in volumes:
            try:
                backing = parse_volume(vol.XMLDesc(0))["backing_path"]
            except libvirt.libvirtError:
                continue  # deleted meanwhile
            if backing and posixpath.normpath(backing) == target:
                found.append(f"{vol.name()} (pool {pool.name()})")
    return sorted(found)


def _domains_using(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str, *, running: bool = False
) -> list[str]:
    """Names of the domains (only the running ones if ``running``) with the volume as a disk or
    in a disk's backing chain."""
    try:
        pool_name = vol.storagePoolLookupByVolume().name()
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not find the pool of {vol.name()}: {_message(exc)}") from None
    flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if running else 0
    try:
        domains = conn.listAllDomains(flags)
    except libvirt.libvirtError as exc:
        raise StorageError(f"Could not list the host's domains: {_message(exc)}") from None
    target = posixpath.normpath(path)
    users = []
    for dom in domains:
        try:
            docs = [dom.XMLDesc(0)]
            if dom.isActive() and dom.isPersistent():
                docs.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            name = dom.name()
        except libvirt.libvirtError:
            continue  # undefined meanwhile
        for doc in docs:
            if _disk_uses(parse(doc), target, pool_name, vol.name()):
                users.append(name)
                break
    return sorted(users)


def _disk_uses(root, path: str, pool_name: str, vol_name: str) -> bool:
    for source in root.iterfind("devices/disk//source"):
        for attr in ("file", "dev"):
            value = source.get(attr)
            if value and posixpath.normpath(value) == path:
                return True
        if source.get("pool") == pool_name and source.get("volume") == vol_name:
            return True
    return False


def grow_volume(conn: libvirt.virConnect, path: str, new_size_bytes: int) -> dict:
    """Grow the volume at ``path`` to ``new_size_bytes``; shrinking is refused.

    Raw files and LVs take the new space from the pool, so that much must be available; qcow2
    grows thin. A disk of a running VM is refused: QEMU holds a qcow2 image's write lock, and a
    raw file grown underneath it stays the old size for the guest. Grow it through the domain
    (``virDomain.blockResize``) instead.
    """
    new_size = _check_size(new_size_bytes, "new size")
    vol = _lookup_path(conn, path)
    info = _volume_xml(vol)
    capacity = info["capacity"]
    if new_size < capacity:
        raise StorageError(
            f"Shrinking is not supported: {info['name']} is {_gib(capacity)}, "
            f"asked {_gib(new_size)}."
        )
    if new_size > capacity:
        users = _domains_using(conn, vol, vol.path(), running=True)
        if users:
            raise StorageError(
                f"{info['name']} is a disk of running VM {', '.join(users)}; grow it through the "
                "VM so that the guest sees the new size, or stop the VM first."
            )
        if info["format"] in ("raw", ""):
            try:
                pool = vol.storagePoolLookupByVolume()
            except libvirt.libvirtError as exc:
                raise StorageError(
                    f"Could not find the pool of {info['name']}: {_message(exc)}"
                ) from None
            _refresh(pool)
            _check_space(pool, new_size - capacity)
        try:
            vol.resize(new_size, 0)  # never VIR_STORAGE_VOL_RESIZE_SHRINK
        except libvirt.libvirtError as exc:
            raise StorageError(f"Could not grow {info['name']}: {_message(exc)}") from None
    return _describe(conn, vol)


def upload_volume(
    conn: libvirt.virConnect,
    pool_name: str,
    name: str,
    stream_iter: Iterable[bytes],
    size_bytes: int,
    fmt: str = "raw",
) -> dict:
    """Create a volume of exactly ``size_bytes`` and fill it with the chunks of ``stream_iter``.

    ``fmt`` is what the data is: ``"raw"`` (disk images and ISOs) or ``"qcow2"`` (directory
    pools only); the volume is created raw and the content must match ``fmt``. A byte count other
    than ``size_bytes``, a failed stream, content of another format, or an image that refers to
    other files (a backing file, an external data file) deletes the partial volume and raises
    ``StorageError``. Only one chunk and the first 64 KiB are held at a time.
    """
    pool = _pool(conn, pool_name)
    backend = _backend(pool)
    if backend.names_format and fmt not in backend.formats:
        raise StorageError(f"Unsupported upload format {fmt!r}: use raw or qcow2.")
    _format_for(pool, backend, fmt)
    vol = _create(conn, pool_name, name, size_bytes, backend.libvirt_format("raw"))
    header = _Header(fmt)
    received = 0
    stream = None
    seconds = call_deadline(conn)
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size_bytes, 0)
        for chunk in stream_iter:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"Upload chunks must be bytes, not {type(chunk).__name__}.")
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)
            if not data:
                continue
            received += len(data)
            if received > size_bytes:
                raise _Refused(f"declared {size_bytes} bytes, received at least {received}")
            header.feed(data)
            _send_all(stream, data, seconds)
        if received != size_bytes:
            raise _Refused(f"declared {size_bytes} bytes, received {received}")
        header.check()
        _stream_call(stream.finish, seconds, "stream finish")
    except BaseException as exc:
        if isinstance(exc, HostCallTimeout):
            give_up(conn, exc.what, exc.seconds)  # the host is silent: no more calls wait on it
        if stream is not None:
            try:
                _stream_call(stream.abort, seconds, "stream abort")
            except libvirt.libvirtError:
                pass
        outcome = (
            "The partial volume was deleted."
            if _discard(vol)
            else f"The partial volume could not be deleted: delete {name} in {pool_name}."
        )
        if isinstance(exc, _Refused):
            raise StorageError(f"Upload of {name} refused: {exc}. {outcome}") from None
        if isinstance(exc, libvirt.libvirtError):
            raise StorageError(
                f"Upload of {name} failed after {received} bytes: "
                f"{_message(exc).rstrip('.')}. {outcome}"
            ) from None
        raise

    # libvirt probes a file's content only when the pool is refreshed (it starts a refresh of
    # its own when the stream closes, in the background): refresh now to read its verdict.
    for attempt in range(_REFRESH_ATTEMPTS):
        if _refresh(pool):
            break
        if attempt < _REFRESH_ATTEMPTS - 1:
            time.sleep(0.2)
    info = _volume_xml(vol)
    if info["backing_path"]:
        _discard(vol)
        raise StorageError(
            f"Upload of {name} refused: the image refers to the backing file "
            f"{info['backing_path']}; upload a standalone image (qemu-img convert flattens "
            "it). The volume was deleted."
        )
    info["backing_depth"] = 1
    return info


_REFRESH_ATTEMPTS = 5
_HEADER_BYTES = 64 * 1024  # a qcow2 image's first cluster: header, extensions, backing name
_QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
# Image formats QEMU would recognise (magic, offset); content declared raw must be none of them.
_IMAGE_MAGICS = (
    ("qcow2", 0, _QCOW2_MAGIC),
    ("qcow", 0, b"QFI"),
    ("qed", 0, b"QED\x00"),
    ("vmdk", 0, b"KDMV"),
    ("vmdk", 0, b"# Disk DescriptorFile"),
    ("vdi", 64, b"\x7f\x10\xda\xbe"),
    ("vpc", 0, b"conectix"),
    ("vhdx", 0, b"vhdxfile"),
)


class _Refused(Exception):
    """An upload stopped by Paddock; the message completes "Upload of X refused: ..."."""


class _Header:
    """The first bytes of an upload, checked against its declared format as soon as there are
    enough of them, so that a wrong image is stopped before the rest is sent."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.data = b""
        self.checked = False

    def feed(self, data: bytes) -> None:
        if self.checked:
            return
        self.data += data[: _HEADER_BYTES - len(self.data)]
        if len(self.data) >= _HEADER_BYTES:
            self.check()

    def check(self) -> None:
        if self.checked:
            return
        self.checked = True
        problem = _content_problem(self.data, self.fmt)
        self.data = b""
        if problem:
            raise _Refused(problem)


def _content_problem(header: bytes, fmt: str) -> str | None:
    found = next(
        (kind for kind, at, magic in _IMAGE_MAGICS if header[at : at + len(magic)] == magic),
        "raw",
    )
    if fmt != "qcow2":
        if found != "raw":
            return f"it was declared raw but its content is a {found} image"
        return None
    if found != "qcow2" or len(header) < 72:
        return f"it was declared qcow2 but its content is a {found} image"
    version, backing_offset, backing_size = struct.unpack_from(">IQI", header, 4)
    (crypt_method,) = struct.unpack_from(">I", header, 32)
    if version not in (2, 3):
        return f"qcow2 version {version} is not supported"
    if backing_offset:
        name = header[backing_offset : backing_offset + min(backing_size, 1023)]
        shown = name.decode("utf-8", "replace") if name else "a file"
        return (
            f"the image refers to the backing file {shown}; upload a standalone image "
            "(qemu-img convert flattens it)"
        )
    if crypt_method:
        return "encrypted qcow2 images are not supported"
    if version == 3 and len(header) >= 80:
        (incompatible,) = struct.unpack_from(">Q", header, 72)
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            return "the image keeps its data in an external file; upload a standalone image"
    return None


def _stream_call(fn, seconds: float | None, what: str, *args):
    """A call on an upload stream (a raw ``virStream``), under the connection's deadline."""
    try:
        return deadline.run(fn, *args, seconds=seconds, what=what)
    except deadline.CallTimeout:
        raise HostCallTimeout(what, seconds) from None


def _send_all(stream: libvirt.virStream, data: bytes, seconds: float | None = None) -> None:
    """Send one chunk; ``send`` may take less than it is given."""
    while data:
        sent = _stream_call(stream.send, seconds, "stream send", data)
        if sent < 0:  # -2 means "would block", which a blocking stream never answers
            raise libvirt.libvirtError("the upload stream refused data")
        data = data[sent:]


def backing_chain(conn: libvirt.virConnect, path: str) -> list[str]:
    """Paths from the volume at ``path`` down to its base image, the volume first.

    A backing file that is in no pool ends the chain: it is listed, but what lies below it is
    not visible through libvirt.
    """
    vol = _lookup_path(conn, path)
    chain = [vol.path()]
    current: libvirt.virStorageVol | None = vol
    while current is not None:
        backing = _volume_xml(current)["backing_path"]
        if not backing:
            break
        if backing in chain:
            raise StorageError(f"The backing chain of {path} loops back to {backing}.")
        if len(chain) >= _CHAIN_WALK_LIMIT:
            raise StorageError(
                f"The backing chain of {path} has more than {_CHAIN_WALK_LIMIT} images."
            )
        chain.append(backing)
        current = _lookup_path(conn, backing, missing_ok=True)
    return chain


def backing_depth(conn: libvirt.virConnect, path: str) -> int:
    """Images in the chain of the volume at ``path``, the volume included (1: no backing)."""
    return len(backing_chain(conn, path))
